//! The crate's error type.

/// Every error that `flow_rl` returns for bad user input or failed I/O.
///
/// Messages name the offending value and say what was expected, so they can be shown to a
/// user as they are.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor's shape disagrees with the shape its role requires.
    #[error("shape mismatch for `{name}`: expected {expected}, found {found}")]
    ShapeMismatch {
        /// The argument or field whose shape is wrong.
        name: String,
        /// The shape that was expected, e.g. `[48, 65536]` or `[R] with R = 48`.
        expected: String,
        /// The shape that was given.
        found: String,
    },

    /// A scalar argument or configuration value is outside its valid range.
    #[error("invalid `{name}` = {value}: expected {expected}")]
    InvalidArgument {
        /// The argument or configuration field.
        name: String,
        /// The value that was given, formatted.
        value: String,
        /// What a valid value looks like.
        expected: String,
    },

    /// A value that must be finite (a reward, an advantage, a log-ratio, ...) was NaN or
    /// infinite.
    #[error("non-finite {what} at index {index}: {value}")]
    NonFinite {
        /// What the value is, e.g. `reward 0 (\"pickscore\")` or `advantage`.
        what: String,
        /// Its position, e.g. the sample or row index.
        index: usize,
        /// The value itself (NaN, inf or -inf).
        value: f64,
    },

    /// A file or folder could not be read or written, or is not the kind of entry expected
    /// (a folder or a device where a regular file belongs). Build it with [`Error::io`].
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or folder.
        path: String,
        /// What went wrong; its [`kind`](std::io::Error::kind) tells a missing file from a
        /// folder or a permission problem.
        #[source]
        source: std::io::Error,
    },

    /// A checkpoint could not be written or restored.
    #[error("checkpoint {path}: {message}")]
    Checkpoint {
        /// The checkpoint file.
        path: String,
        /// What is wrong with it.
        message: String,
    },

    /// A weights file does not fit the model: every offending key is listed, with the
    /// shape the model expects and the one the file holds. Nothing was loaded.
    #[error("{}", describe_weight_problems(path, problems))]
    WeightMismatch {
        /// The weights file or folder.
        path: String,
        /// The missing, unexpected and mis-shaped keys.
        problems: Vec<WeightProblem>,
    },

    /// A backend's device could not run a computation: no GPU, or no driver for it.
    #[error("the {backend} backend has no usable device: {message}. To fix: {hint}")]
    BackendUnavailable {
        /// The backend, e.g. `wgpu`.
        backend: String,
        /// What went wrong, as the backend reported it.
        message: String,
        /// What to install or change.
        hint: String,
    },

    /// A tensor could not be read back from its device.
    #[error("could not read a tensor back from the device: {0}")]
    TensorRead(String),

    /// A reward server did not score a batch: it could not be reached, was too slow,
    /// answered with an HTTP error, or sent an answer that does not fit the request.
    #[error(
        "reward server {server} (reward {reward:?}) failed after {attempts} attempt{}: {failure}",
        if *attempts == 1 { "" } else { "s" }
    )]
    RewardServer {
        /// The URL the request went to.
        server: String,
        /// The name of the reward it was asked for.
        reward: String,
        /// What went wrong on the last attempt.
        failure: ServerFailure,
        /// How many requests were sent (1 + retries of transient failures).
        attempts: usize,
    },

    /// A phase of a data-parallel step failed on one or more workers, so it failed on every
    /// worker and changed nothing. A worker whose own phase failed returns its own error
    /// instead.
    #[error("{phase} failed on {}", describe_worker_failures(failures))]
    WorkerFailed {
        /// The phase, e.g. `rollout and rewards`.
        phase: String,
        /// Each failed worker and its error message.
        failures: Vec<WorkerFailure>,
    },

    /// A collective operation between workers (an all-reduce, a broadcast) failed.
    #[error("distributed {operation} failed: {message}")]
    Distributed {
        /// The operation, e.g. `all-reduce of 1024 values`.
        operation: String,
        /// What went wrong.
        message: String,
    },
}

/// Why a reward server did not score a batch (see [`Error::RewardServer`]).
///
/// [`Unreachable`](Self::Unreachable), [`TimedOut`](Self::TimedOut), HTTP 5xx and 429 are
/// transient and retried; every other failure is returned at once.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerFailure {
    /// No connection: refused, reset, or the host is unknown.
    Unreachable(String),
    /// No complete answer within the timeout.
    TimedOut {
        /// The timeout, in seconds.
        seconds: f64,
    },
    /// An HTTP status other than 200.
    HttpStatus {
        /// The status code.
        code: u16,
        /// The start of the answer's body, as text.
        body: String,
    },
    /// The answer could not be read as the protocol's answer: what was wrong.
    Malformed(String),
    /// The answer holds another number of scores than samples were sent.
    WrongCount {
        /// Samples sent.
        expected: usize,
        /// Scores received.
        found: usize,
    },
    /// The server reported an error for one sample instead of its score.
    SampleError {
        /// The sample's index in the batch.
        sample: usize,
        /// The server's message.
        message: String,
    },
}

impl ServerFailure {
    /// Whether a later attempt may succeed: no connection, a timeout, HTTP 5xx or 429.
    pub fn is_transient(&self) -> bool {
        match self {
            ServerFailure::Unreachable(_) | ServerFailure::TimedOut { .. } => true,
            ServerFailure::HttpStatus { code, .. } => *code >= 500 || *code == 429,
            _ => false,
        }
    }
}

impl std::fmt::Display for ServerFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerFailure::Unreachable(reason) => write!(f, "unreachable ({reason})"),
            ServerFailure::TimedOut { seconds } => write!(f, "no answer within {seconds} s"),
            ServerFailure::HttpStatus { code, body } if body.is_empty() => {
                write!(f, "HTTP status {code}")
            }
            ServerFailure::HttpStatus { code, body } => write!(f, "HTTP status {code}: {body}"),
            ServerFailure::Malformed(what) => write!(f, "malformed answer: {what}"),
            ServerFailure::WrongCount { expected, found } => {
                write!(f, "{found} scores for {expected} samples")
            }
            ServerFailure::SampleError { sample, message } => {
                write!(f, "error for sample {sample}: {message}")
            }
        }
    }
}

/// One key that keeps a weights file from loading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightProblem {
    /// The key as stored in the file.
    pub key: String,
    /// The shape the model needs; `None` for a key the model has no use for.
    pub expected: Option<Vec<usize>>,
    /// The shape the file holds; `None` for a key the file lacks.
    pub found: Option<Vec<usize>>,
}

impl WeightProblem {
    /// A key the model needs and the file lacks.
    pub fn missing(key: impl Into<String>, expected: Vec<usize>) -> Self {
        Self {
            key: key.into(),
            expected: Some(expected),
            found: None,
        }
    }

    /// A key the file holds and the model has no use for.
    pub fn unexpected(key: impl Into<String>, found: Vec<usize>) -> Self {
        Self {
            key: key.into(),
            expected: None,
            found: Some(found),
        }
    }

    /// A key whose stored shape differs from the one the model needs.
    pub fn mis_shaped(key: impl Into<String>, expected: Vec<usize>, found: Vec<usize>) -> Self {
        Self {
            key: key.into(),
            expected: Some(expected),
            found: Some(found),
        }
    }

    /// `"missing"`, `"unexpected"` or `"mis-shaped"`, as the error message counts them.
    pub fn kind(&self) -> &'static str {
        match (&self.expected, &self.found) {
            (Some(_), None) => "missing",
            (None, Some(_)) => "unexpected",
            (Some(_), Some(_)) => "mis-shaped",
            (None, None) => "unreadable",
        }
    }
}

impl std::fmt::Display for WeightProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} `{}`", self.kind(), self.key)?;
        match (&self.expected, &self.found) {
            (Some(expected), None) => write!(f, ": expected {expected:?}"),
            (None, Some(found)) => write!(f, ": found {found:?}"),
            (Some(expected), Some(found)) => write!(f, ": expected {expected:?}, found {found:?}"),
            (None, None) => Ok(()),
        }
    }
}

/// At most this many problems are spelled out in an error message.
const LISTED_PROBLEMS: usize = 40;

fn describe_weight_problems(path: &str, problems: &[WeightProblem]) -> String {
    let count = |kind: &str| problems.iter().filter(|p| p.kind() == kind).count();
    let mut message = format!(
        "weights in {path} do not fit the model ({} missing, {} unexpected, {} mis-shaped; \
         nothing was loaded):",
        count("missing"),
        count("unexpected"),
        count("mis-shaped"),
    );
    for problem in problems.iter().take(LISTED_PROBLEMS) {
        message.push_str(&format!("\n  {problem}"));
    }
    if problems.len() > LISTED_PROBLEMS {
        message.push_str(&format!(
            "\n  … and {} more",
            problems.len() - LISTED_PROBLEMS
        ));
    }
    message
}

/// One failed worker of a data-parallel step (see [`Error::WorkerFailed`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerFailure {
    /// The worker's rank.
    pub rank: usize,
    /// Its error, as text.
    pub message: String,
}

fn describe_worker_failures(failures: &[WorkerFailure]) -> String {
    let listed: Vec<String> = failures
        .iter()
        .map(|failure| format!("worker {}: {}", failure.rank, failure.message))
        .collect();
    listed.join("; ")
}

/// `Result` with [`Error`] as the error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Builds an [`Error::Io`] for `path`.
    ///
    /// ```
    /// use flow_rl::Error;
    ///
    /// let missing = std::io::Error::from(std::io::ErrorKind::NotFound);
    /// let err = Error::io("runs/step-10.ckpt", missing);
    /// assert!(err.to_string().starts_with("I/O error on runs/step-10.ckpt: "));
    /// assert!(matches!(&err, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound));
    /// ```
    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }

    /// Builds an [`Error::InvalidArgument`].
    pub(crate) fn invalid(
        name: impl Into<String>,
        value: impl std::fmt::Display,
        expected: impl Into<String>,
    ) -> Self {
        Error::InvalidArgument {
            name: name.into(),
            value: value.to_string(),
            expected: expected.into(),
        }
    }

    /// Builds an [`Error::ShapeMismatch`].
    pub(crate) fn shape(
        name: impl Into<String>,
        expected: impl Into<String>,
        found: impl std::fmt::Debug,
    ) -> Self {
        Error::ShapeMismatch {
            name: name.into(),
            expected: expected.into(),
            found: format!("{found:?}"),
        }
    }
}
