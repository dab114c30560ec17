#pragma once
// The command line of the sample programs: help, usage errors and exit codes
// the same way in each.

#include <boost/program_options.hpp>
#include <exception>
#include <iostream>
#include <optional>

namespace loom::samples {

/// Reads the command line into the variables `desc` binds, then calls
/// complete(vm): the defaults that depend on other options, and the checks
/// (an exception is a usage error). Returns the exit code when the program
/// stops here: 0 after printing --help, 2 after printing a usage error as
/// "<name>: <what>".
template <class Complete>
std::optional<int> parse_command_line(const char* name, int argc, char** argv,
                                      const boost::program_options::options_description& desc, Complete&& complete) {
  namespace po = boost::program_options;
  try {
    po::variables_map vm;
    po::store(po::command_line_parser(argc, argv).options(desc).run(), vm);
    if (vm.count("help")) {
      std::cout << desc << "\n";
      return 0;
    }
    po::notify(vm);
    complete(vm);
  } catch (const std::exception& e) {
    std::cerr << name << ": " << e.what() << "\n(see " << name << " --help)\n";
    return 2;
  }
  return std::nullopt;
}

/// run(), with an error printed as "<name>: error: <what>" and exit code 1.
template <class Run>
int run_reporting_errors(const char* name, Run&& run) {
  try {
    return run();
  } catch (const std::exception& e) {
    std::cout.flush();
    std::cerr << name << ": error: " << e.what() << "\n";
    return 1;
  }
}

}  // namespace loom::samples
