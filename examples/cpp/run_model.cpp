// run_model: load a TorchScript archive and run its forward method, without Python.
//
//   run_model <model.pt> <inputs.pt> <outputs.pt>
//
// <inputs.pt> holds a list (or tuple) of tensors written by Python's `torch.save([x, y], path)`;
// they are the positional arguments of forward.  The result of forward (a tensor, or a tuple or
// list of them -- any value the pickler handles) is written to <outputs.pt>, which Python reads
// back with `torch.load(path)`.  Exit status 0 on success; on any error the message goes to
// stderr and the exit status is 1 (2 for a wrong command line).
#include <torch/script.h>

#include <fstream>
#include <iostream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

std::vector<char> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw std::runtime_error("cannot open " + path);
  }
  return std::vector<char>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_file(const std::string& path, const std::vector<char>& data) {
  std::ofstream out(path, std::ios::binary);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
  if (!out) {
    throw std::runtime_error("cannot write " + path);
  }
}

std::vector<c10::IValue> load_inputs(const std::string& path) {
  c10::IValue value = torch::jit::pickle_load(read_file(path));
  if (value.isTuple()) {
    const auto& elements = value.toTupleRef().elements();
    return std::vector<c10::IValue>(elements.begin(), elements.end());
  }
  if (value.isList()) {
    return value.toList().vec();
  }
  throw std::runtime_error(path + ": expected a list or tuple of inputs, got " + value.tagKind());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::cerr << "usage: " << argv[0] << " <model.pt> <inputs.pt> <outputs.pt>\n";
    return 2;
  }
  try {
    torch::NoGradGuard no_grad;
    torch::jit::Module module = torch::jit::load(argv[1]);
    std::vector<c10::IValue> inputs = load_inputs(argv[2]);
    c10::IValue output = module.forward(inputs);
    write_file(argv[3], torch::jit::pickle_save(output));
  } catch (const c10::Error& e) {
    std::cerr << "run_model: " << e.what_without_backtrace() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "run_model: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
