fn main() -> std::process::ExitCode {
    fortifile::cli::run()
}
