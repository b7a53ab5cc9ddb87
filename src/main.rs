//! `dagrid`: the command line. Service verbs (`coordinator`, `worker`, `start-all`) run the
//! services; client verbs (`submit`, `batch`, `status`, `runs`, `logs`, `dags`, `register`,
//! `queues`, `queue`, `retry`) talk to a coordinator's HTTP API (`--server`, `DAGRID_SERVER`), never to
//! Redis; `health` probes a coordinator's or worker's readiness; `validate` checks DAG files
//! locally, and `dry` prints a DAG's plan (a file locally, a
//! registered DAG through the API).

fn main() -> std::process::ExitCode {
    dagrid::cli::main()
}
