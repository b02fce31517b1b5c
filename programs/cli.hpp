#pragma once
// What every lightloop program (the examples, the benchmarks, the checks)
// shares on its command line, parsed with CLI11: --help, exit code 2 for an
// unknown flag, a missing or malformed value, and for input the library
// refuses (a lightloop::error: a setting out of range, a missing data set),
// printed as one line instead of an abort. For the programs only: the library
// itself never includes CLI11.

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <string>

#include <CLI/CLI.hpp>

#include <lightloop/core/error.hpp>

namespace lightloop::programs {

/// The exit code for bad input: a flag, a value, or what the library refuses.
inline constexpr int bad_input = 2;

/// Parses argv with `app`, then returns body()'s exit code. --help prints
/// the usage and returns 0; a parse error prints CLI11's message and returns
/// bad_input; a lightloop::error (or a filesystem error: a path from the
/// command line) thrown by body prints "<name>: <message>" and returns
/// bad_input; any other exception prints and returns 1.
template <class Body>
int run(CLI::App& app, int argc, char** argv, Body&& body) {
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        const int code = app.exit(e); // prints the help, or the message and a hint
        return code == 0 ? 0 : bad_input;
    }
    try {
        return body();
    } catch (const lightloop::error& e) {
        std::fprintf(stderr, "%s: %s\n", app.get_name().c_str(), e.what());
        return bad_input;
    } catch (const std::filesystem::filesystem_error& e) { // a path given on the command line
        std::fprintf(stderr, "%s: %s\n", app.get_name().c_str(), e.what());
        return bad_input;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "%s: internal error: %s\n", app.get_name().c_str(), e.what());
        return 1;
    }
}

/// A value that must be a number above zero ("--epochs ten": "--epochs: must
/// be a positive number, got 'ten'").
inline CLI::Validator positive() {
    return CLI::Validator(
      [](std::string& value) -> std::string {
          char* end = nullptr;
          const double v = std::strtod(value.c_str(), &end);
          if (end == value.c_str() || *end != '\0' || !(v > 0.0)) {
              return "must be a positive number, got '" + value + "'";
          }
          return {};
      },
      "POSITIVE");
}

/// No empty item in a comma-separated list (`--seeds ""`: "--seeds: an item
/// of the list is empty"; CLI11 would otherwise train on the default). An
/// empty item between commas, "1,,2", CLI11 drops before any check.
inline CLI::Validator no_empty_items() {
    return CLI::Validator(
      [](std::string& value) -> std::string {
          return value.empty() ? "an item of the list is empty" : std::string();
      },
      "ITEMS");
}

/// The thread count flag every training program has.
inline CLI::Option* add_threads(CLI::App& app, int& threads) {
    return app
      .add_option("--threads", threads, "threads for GEMMs and everything else (sets OpenBLAS's)")
      ->check(positive())
      ->capture_default_str();
}

} // namespace lightloop::programs
