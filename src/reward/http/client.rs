//! The HTTP transport the reward-server clients share: timeouts, retries of transient
//! failures with doubling backoff, and errors that name the server and the reward.

use std::time::Duration;

use burn::config::Config;

use crate::error::{Error, Result, ServerFailure};

/// The most characters of an error answer's body quoted in an error message.
const BODY_EXCERPT_CHARS: usize = 200;

/// The largest answer read, in bytes (answers are a few scores; this only bounds a
/// misbehaving server).
const MAX_ANSWER_BYTES: u64 = 64 << 20;

/// How a reward client talks to its server: the timeout of one request and how often a
/// transient failure (no connection, timeout, HTTP 5xx or 429) is retried.
///
/// A 4xx answer and an answer that does not fit the protocol are never retried: the
/// same request would fail again.
///
/// ```
/// use flow_rl::reward::http::RewardServerConfig;
///
/// let config = RewardServerConfig::new().with_timeout_secs(30.0).with_retries(4);
/// config.validate()?;
/// assert!(RewardServerConfig::new().with_timeout_secs(0.0).validate().is_err());
/// # Ok::<(), flow_rl::Error>(())
/// ```
#[derive(Config, Debug, PartialEq)]
pub struct RewardServerConfig {
    /// Seconds one request may take, from connecting to the last byte of the answer.
    #[config(default = 120.0)]
    pub timeout_secs: f64,
    /// Further attempts after a transient failure.
    #[config(default = 2)]
    pub retries: usize,
    /// Seconds before the first retry; each later retry waits twice as long.
    #[config(default = 1.0)]
    pub initial_backoff_secs: f64,
}

impl RewardServerConfig {
    /// Checks that the timeout is positive and finite and the backoff non-negative and
    /// finite.
    pub fn validate(&self) -> Result<()> {
        if !(self.timeout_secs.is_finite() && self.timeout_secs > 0.0) {
            return Err(Error::invalid(
                "reward server timeout_secs",
                self.timeout_secs,
                "a positive, finite number of seconds",
            ));
        }
        if !(self.initial_backoff_secs.is_finite() && self.initial_backoff_secs >= 0.0) {
            return Err(Error::invalid(
                "reward server initial_backoff_secs",
                self.initial_backoff_secs,
                "a non-negative, finite number of seconds",
            ));
        }
        Ok(())
    }

    /// A client of the server at `url` (plain `http://`; this build has no TLS) for the
    /// reward named `reward`.
    pub fn init(&self, url: &str, reward: &str) -> Result<RewardServerClient> {
        self.validate()?;
        let url = url.trim();
        if url.starts_with("https://") {
            return Err(Error::invalid(
                "reward server URL",
                url,
                "an http:// URL: flow-rl is built without TLS, so reach an https server \
                 through a local proxy or an SSH tunnel",
            ));
        }
        let authority = url.strip_prefix("http://").unwrap_or_default();
        if authority.is_empty() || authority.starts_with('/') {
            return Err(Error::invalid(
                "reward server URL",
                url,
                "an http:// URL with a host, e.g. http://127.0.0.1:8000",
            ));
        }
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs_f64(self.timeout_secs)))
            .http_status_as_error(false)
            .build()
            .new_agent();
        Ok(RewardServerClient {
            agent,
            url: url.to_owned(),
            reward: reward.to_owned(),
            config: self.clone(),
        })
    }
}

/// Posts request bodies to one reward server's URL and reads the answers, retrying
/// transient failures as its [`RewardServerConfig`] says.
#[derive(Debug, Clone)]
pub struct RewardServerClient {
    agent: ureq::Agent,
    url: String,
    reward: String,
    config: RewardServerConfig,
}

impl RewardServerClient {
    /// The URL requests go to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The reward's name, as errors and logs give it.
    pub fn reward(&self) -> &str {
        &self.reward
    }

    /// Posts `body` with the `headers` (name, value) and reads the 200 answer with
    /// `read_answer`.
    ///
    /// Transient failures are retried after 1, 2, 4, … × the initial backoff; a 4xx
    /// answer or one `read_answer` refuses ends the call at once. The error is an
    /// [`Error::RewardServer`] with the last failure and the number of attempts.
    pub fn post<T>(
        &self,
        body: &[u8],
        headers: &[(&str, &str)],
        read_answer: impl Fn(&[u8]) -> Result<T, ServerFailure>,
    ) -> Result<T> {
        let mut backoff = self.config.initial_backoff_secs;
        let mut attempt = 1;
        loop {
            let failure = match self.post_once(body, headers) {
                Ok(answer) => match read_answer(&answer) {
                    Ok(value) => return Ok(value),
                    Err(failure) => failure,
                },
                Err(failure) => failure,
            };
            if !failure.is_transient() || attempt > self.config.retries {
                return Err(self.error(failure, attempt));
            }
            log::warn!(
                "reward server {} (reward {:?}), attempt {attempt} of {}: {failure}; \
                 retrying in {backoff} s",
                self.url,
                self.reward,
                self.config.retries + 1,
            );
            std::thread::sleep(Duration::from_secs_f64(backoff));
            backoff *= 2.0;
            attempt += 1;
        }
    }

    /// An [`Error::RewardServer`] of this server and reward.
    pub fn error(&self, failure: ServerFailure, attempts: usize) -> Error {
        Error::RewardServer {
            server: self.url.clone(),
            reward: self.reward.clone(),
            failure,
            attempts,
        }
    }

    /// One request: the answer's body when the status is 200.
    fn post_once(&self, body: &[u8], headers: &[(&str, &str)]) -> Result<Vec<u8>, ServerFailure> {
        let mut request = self.agent.post(&self.url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let mut response = request
            .send(body)
            .map_err(|error| self.transport_failure(error))?;
        let status = response.status().as_u16();
        let answer = response
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER_BYTES)
            .read_to_vec()
            .map_err(|error| self.transport_failure(error));
        if status != 200 {
            let body = answer.map(|bytes| excerpt(&bytes)).unwrap_or_default();
            return Err(ServerFailure::HttpStatus { code: status, body });
        }
        answer
    }

    fn transport_failure(&self, error: ureq::Error) -> ServerFailure {
        let timed_out = ServerFailure::TimedOut {
            seconds: self.config.timeout_secs,
        };
        match error {
            ureq::Error::Timeout(_) => timed_out,
            ureq::Error::Io(io)
                if matches!(
                    io.kind(),
                    std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
                ) =>
            {
                timed_out
            }
            ureq::Error::Io(io) => ServerFailure::Unreachable(io.to_string()),
            ureq::Error::ConnectionFailed => {
                ServerFailure::Unreachable("the connection failed".into())
            }
            ureq::Error::HostNotFound => ServerFailure::Unreachable("host not found".into()),
            ureq::Error::BodyExceedsLimit(limit) => {
                ServerFailure::Malformed(format!("an answer of more than {limit} bytes"))
            }
            other => ServerFailure::Malformed(other.to_string()),
        }
    }
}

/// The start of an error answer as one line of text.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() > BODY_EXCERPT_CHARS {
        let cut: String = line.chars().take(BODY_EXCERPT_CHARS).collect();
        format!("{cut}…")
    } else {
        line
    }
}

/// Checks that an answer holds one score per sample and that each is finite.
pub(super) fn check_scores(scores: Vec<f64>, expected: usize) -> Result<Vec<f32>, ServerFailure> {
    if scores.len() != expected {
        return Err(ServerFailure::WrongCount {
            expected,
            found: scores.len(),
        });
    }
    scores
        .into_iter()
        .enumerate()
        .map(|(sample, score)| {
            let narrowed = score as f32;
            if narrowed.is_finite() {
                Ok(narrowed)
            } else {
                Err(ServerFailure::Malformed(format!(
                    "the score of sample {sample} is {score}, not a finite number"
                )))
            }
        })
        .collect()
}
