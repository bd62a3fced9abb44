//! The sandbox relay as a program of its own (`rdev sandbox-relay` is the same code):
//! used where the running program is not the `rdev` binary, such as the test suites.
//! See `rdev_agents::sandbox::relay`.

fn main() -> std::process::ExitCode {
    rdev_agents::sandbox::relay::main(std::env::args_os().skip(1))
}
