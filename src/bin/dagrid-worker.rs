//! `dagrid-worker`: the worker alone (`dagrid_worker::cli`), without the coordinator, the
//! HTTP API or the client verbs, so its resident memory is a fraction of `dagrid`'s. It takes
//! exactly the flags and variables of `dagrid worker`, which execs it when it sits next to
//! `dagrid`, and it is its own step supervisor (`dagrid-worker __step-supervisor`).

fn main() -> std::process::ExitCode {
    dagrid_worker::cli::main()
}
