//! Request and response bodies that only the OpenAPI document describes (the handlers build
//! or read them by hand): a leaf module, so the handlers and the document both use it.

use serde::Serialize;

/// The body of the health probes (documentation only; the handlers build it with `json!`):
/// `{"status": "live" | "ready" | "unready", "failing"?: "draining" | "redis"}`.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct HealthStatus {
    /// `live`, `ready` or `unready`.
    #[schema(example = "ready")]
    status: String,
    /// For `unready`: the failing check, `draining` or `redis`.
    #[serde(skip_serializing_if = "Option::is_none")]
    failing: Option<String>,
}

/// The body of `POST /api/v1/dags` as the document describes it: a DAG file, sent as YAML
/// (documentation only; the handler reads the text). The schema is a closed core of the
/// format, exact for what it shows, so that a document it allows is a valid DAG and one it
/// refuses is refused: a name (here or in `?name=`) and 1 to 1000 nameless steps, each a map with a command or a
/// command line (in a file without `type:`, a chain). Step names are left out of this core:
/// the format takes them, but two steps may not share one, which a schema cannot say. The API
/// accepts every key of docs/dag-format.md (Dagu's format); an unknown key is refused with 422
/// `invalid_dag`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
#[serde(deny_unknown_fields)]
pub(crate) struct DagFile {
    /// The DAG's name: 1 to 64 of `A-Z a-z 0-9 _ . -`, not only dots. Optional here because
    /// `?name=` may give it instead; with neither, the API answers 422 `invalid_dag`.
    #[schema(
        pattern = "^[A-Za-z0-9_.-]*[A-Za-z0-9_-][A-Za-z0-9_.-]*$",
        min_length = 1,
        max_length = 64
    )]
    name: Option<String>,
    /// The steps, in order; each is named as Dagu names a nameless step (`cmd_1`, `cmd_2`, …).
    #[schema(min_items = 1, max_items = 1000)]
    steps: Vec<DagFileItem>,
}

/// One item of a [`DagFile`]'s `steps`: a step map, or (Dagu's shorthand) a step given as its
/// command line.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
#[serde(untagged)]
pub(crate) enum DagFileItem {
    /// A step map.
    Step(DagFileStep),
    /// A command line.
    Command(DagFileCommand),
}

/// A step given as its command line: not blank, without a NUL byte.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
#[schema(pattern = "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$")]
pub(crate) struct DagFileCommand(String);

/// One step of a [`DagFile`] (the format's core: a command).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
#[serde(deny_unknown_fields)]
pub(crate) struct DagFileStep {
    /// The shell command line, not blank, without a NUL byte.
    #[schema(pattern = "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$", min_length = 1)]
    command: String,
}
