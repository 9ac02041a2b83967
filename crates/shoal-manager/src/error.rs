#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidToken(String),
    #[error("certificate authority: {0}")]
    Ca(String),
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
