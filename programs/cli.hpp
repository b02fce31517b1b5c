#pragma once
// What every lightloop program (the examples, the benchmarks, the checks)
// shares on its command line, parsed with CLI11: --help, exit code 2 for an
// unknown flag, a missing or malformed value, and for input the library
// refuses (a lightloop::error: a setting out of range, a missing data set),
// printed as one line instead of an abort. For the programs only: the library
// itself never includes CLI11.

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <new>
#include <string>
#include <string_view>
#include <vector>

#include <CLI/CLI.hpp>

#include <lightloop/core/error.hpp>

namespace lightloop::programs {

/// The exit code for bad input: a flag, a value, or what the library refuses.
inline constexpr int bad_input = 2;

/// Refuses an empty item in the value of a list flag (one with a
/// delimiter): "--seeds 1,,2", "--seeds 1,", "--seeds ''" fail with
/// "--seeds: an item of the list is empty". CLI11 splits a delimited value
/// and drops its empty items before any validator sees them, so "1,,2" would
/// otherwise train on seeds 1 and 2, and "" on the default. Looks at the
/// "--name value..." and "--name=value" forms, up to the next flag.
inline void reject_empty_list_items(const CLI::App& app, int argc, const char* const* argv) {
    for (int i = 1; i < argc; ++i) {
        const std::string_view arg = argv[i];
        if (arg == "--") {
            return;
        }
        if (!arg.starts_with("--")) {
            continue;
        }
        const std::size_t equals = arg.find('=');
        const std::string name(arg.substr(0, equals));
        const CLI::Option* option = app.get_option_no_throw(name);
        if (option == nullptr || option->get_delimiter() == '\0') {
            continue;
        }
        const char delimiter = option->get_delimiter();
        const auto check = [&](std::string_view value) {
            if (value.empty() || value.front() == delimiter || value.back() == delimiter ||
                value.find(std::string(2, delimiter)) != std::string_view::npos) {
                throw CLI::ValidationError(name, "an item of the list is empty, in '" +
                                                   std::string(value) + "'");
            }
        };
        if (equals != std::string_view::npos) {
            check(arg.substr(equals + 1));
            continue;
        }
        for (int j = i + 1; j < argc && !std::string_view(argv[j]).starts_with("-"); ++j) {
            check(argv[j]);
        }
    }
}

/// Why `value` is not an integer CLI11 would read faithfully into an option
/// of the given signedness, or "" if it is. CLI11 2.1 reads integers with
/// strtoull / strtoll in base 0 and checks neither the sign of an unsigned
/// value nor overflow, so "--seed -1" would become 18446744073709551615,
/// "--batch 99999999999999999999" the same, and "--seed 010" octal 8.
inline std::string integer_problem(const std::string& value, bool is_unsigned) {
    const std::size_t first = value.find_first_not_of(" \t");
    if (first == std::string::npos) {
        return {}; // CLI11's own conversion refuses it
    }
    std::size_t digits = first;
    if (value[first] == '-' || value[first] == '+') {
        if (is_unsigned && value[first] == '-') {
            return "must not be negative, got '" + value + "'";
        }
        ++digits;
    }
    if (digits + 1 < value.size() && value[digits] == '0' && value[digits + 1] >= '0' &&
        value[digits + 1] <= '9') {
        return "'" + value + "' has a leading 0, which would read it as an octal number; " +
               "write it without";
    }
    errno = 0;
    if (is_unsigned) {
        (void)std::strtoull(value.c_str(), nullptr, 0);
    } else {
        (void)std::strtoll(value.c_str(), nullptr, 0);
    }
    if (errno == ERANGE) {
        return "'" + value + "' is out of range";
    }
    return {};
}

/// Checks every integer option of `app` and its subcommands (the ones CLI11
/// types UINT or INT; each item of a list) with integer_problem: "--seed -1"
/// fails with "--seed: must not be negative, got '-1'".
inline void check_integer_options(CLI::App& app) {
    for (CLI::Option* option : app.get_options()) {
        const std::string type = option->get_type_name();
        const bool is_unsigned = type.starts_with("UINT");
        if (is_unsigned || type.starts_with("INT")) {
            option->check([is_unsigned](const std::string& value) {
                return integer_problem(value, is_unsigned);
            });
        }
    }
    for (CLI::App* sub : app.get_subcommands([](CLI::App*) { return true; })) {
        check_integer_options(*sub);
    }
}

/// Parses argv with `app`, then returns body()'s exit code. --help prints
/// the usage and returns 0; a parse error prints CLI11's message and returns
/// bad_input; a lightloop::error (or a filesystem error: a path from the
/// command line) thrown by body prints "<name>: <message>" and returns
/// bad_input; so does running out of memory (std::bad_alloc: sizes the
/// machine cannot hold); any other exception prints and returns 1. A list
/// flag's empty item is a parse error (reject_empty_list_items), and so is
/// an integer CLI11 would misread (check_integer_options).
template <class Body>
int run(CLI::App& app, int argc, char** argv, Body&& body) {
    try {
        check_integer_options(app);
        reject_empty_list_items(app, argc, argv);
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
    } catch (const std::bad_alloc&) { // sizes from the command line beyond the machine
        std::fprintf(stderr,
                     "%s: out of memory: the sizes asked for (batch, model, data) need more "
                     "memory than this machine has\n",
                     app.get_name().c_str());
        return bad_input;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "%s: internal error: %s\n", app.get_name().c_str(), e.what());
        return 1;
    }
}

/// Whether `value` reads whole as a finite number, and that number.
inline bool finite_number(const std::string& value, double& v) {
    char* end = nullptr;
    v = std::strtod(value.c_str(), &end);
    return end != value.c_str() && *end == '\0' && std::isfinite(v);
}

/// A value that must be a finite number above zero ("--epochs ten",
/// "--frame-rate inf": "--epochs: must be a positive number, got 'ten'").
inline CLI::Validator positive() {
    return CLI::Validator(
      [](std::string& value) -> std::string {
          double v = 0.0;
          if (!finite_number(value, v) || !(v > 0.0)) {
              return "must be a positive number, got '" + value + "'";
          }
          return {};
      },
      "POSITIVE");
}

/// A value that must be a finite number at least zero ("--gemm-gflops -5":
/// "--gemm-gflops: must be a number >= 0, got '-5'").
inline CLI::Validator non_negative() {
    return CLI::Validator(
      [](std::string& value) -> std::string {
          double v = 0.0;
          if (!finite_number(value, v) || !(v >= 0.0)) {
              return "must be a number >= 0, got '" + value + "'";
          }
          return {};
      },
      "NONNEGATIVE");
}

/// The thread count flag every training program has.
inline CLI::Option* add_threads(CLI::App& app, int& threads) {
    return app
      .add_option("--threads", threads, "threads for GEMMs and everything else (sets OpenBLAS's)")
      ->check(positive())
      ->capture_default_str();
}

/// A comma-separated list of precisions (fp32, bf16), each checked.
inline CLI::Option* add_precisions(CLI::App& app, std::vector<std::string>& precisions,
                                   const std::string& description) {
    return app.add_option("--precision", precisions, description)
      ->delimiter(',')
      ->check(CLI::IsMember({"fp32", "bf16"}))
      ->capture_default_str();
}

} // namespace lightloop::programs
