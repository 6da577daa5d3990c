"""Resource caps for loading archives.

Every loader stage reads its caps from one :class:`Limits` value, so a caller can tighten
(or, for a trusted model, loosen) them in one place: ``kiln.load(path, limits=Limits(...))``.
The defaults allow every real model we know of (a 2 GB archive, a 4 GB tensor) while keeping
a hostile file from exhausting memory or time.
"""

from __future__ import annotations

from dataclasses import dataclass

MB = 1 << 20
GB = 1 << 30


@dataclass(frozen=True)
class Limits:
    # -- the zip container -------------------------------------------------------------------
    max_archive_bytes: int = 16 * GB        # the whole file
    max_entries: int = 100_000              # records in the central directory
    max_record_bytes: int = 8 * GB          # one record, uncompressed
    max_total_bytes: int = 32 * GB          # all records, uncompressed
    max_name_bytes: int = 4096              # one record name
    # -- pickles (data.pkl, constants.pkl) ---------------------------------------------------
    max_pickle_ops: int = 50_000_000
    max_pickle_depth: int = 1000            # nesting of containers / MARKs
    max_memo_entries: int = 10_000_000
    # -- tensors -----------------------------------------------------------------------------
    max_tensor_bytes: int = 8 * GB
    max_tensor_rank: int = 64
    # -- code/ -------------------------------------------------------------------------------
    max_source_bytes: int = 64 * MB         # all code/ files together
    max_ast_depth: int = 200                # nesting of expressions and statements
    max_statements: int = 50_000            # statements in all of code/ (compile time grows with them)
