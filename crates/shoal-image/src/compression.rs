//! Compression detection by magic bytes (never by media type alone) and streaming decoders.

use std::io::{self, Cursor, Read};

use flate2::read::MultiGzDecoder;

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
const BZIP2_MAGIC: &[u8] = b"BZh";
const XZ_MAGIC: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0x00];

/// How a stream is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// Recognizes gzip and zstd; anything else is taken as uncompressed. bzip2 and xz are
    /// recognized only to give a clear error.
    pub(crate) fn detect(magic: &[u8]) -> Result<Compression, String> {
        if magic.starts_with(GZIP_MAGIC) {
            Ok(Compression::Gzip)
        } else if magic.starts_with(ZSTD_MAGIC) {
            Ok(Compression::Zstd)
        } else if magic.starts_with(BZIP2_MAGIC) {
            Err(
                "bzip2 compression is not supported: use an uncompressed, gzip or zstd layer"
                    .into(),
            )
        } else if magic.starts_with(XZ_MAGIC) {
            Err("xz compression is not supported: use an uncompressed, gzip or zstd layer".into())
        } else {
            Ok(Compression::None)
        }
    }

    /// The OCI media type of a layer blob with this compression.
    pub(crate) fn oci_layer_media_type(self) -> &'static str {
        match self {
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }
}

/// The number of leading bytes [`peek`] returns.
pub(crate) const MAGIC_LEN: usize = 6;

/// Reads up to [`MAGIC_LEN`] bytes and returns them together with a reader that still yields the
/// whole stream from its start (works on pipes, where one `read` may return a single byte).
pub(crate) fn peek<R: Read>(mut reader: R) -> io::Result<(Vec<u8>, impl Read)> {
    let mut magic = vec![0; MAGIC_LEN];
    let mut filled = 0;
    while filled < MAGIC_LEN {
        match reader.read(&mut magic[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    magic.truncate(filled);
    Ok((magic.clone(), Cursor::new(magic).chain(reader)))
}

/// Wraps `reader` in the decoder its magic bytes call for.
///
/// # Errors
///
/// Reading the magic failed, or the compression is recognized but not supported; the string says
/// which.
pub(crate) fn decompress<'a, R: Read + 'a>(
    reader: R,
) -> Result<(Compression, Box<dyn Read + 'a>), DecompressError> {
    let (magic, reader) = peek(reader).map_err(DecompressError::Io)?;
    let compression = Compression::detect(&magic).map_err(DecompressError::Unsupported)?;
    let reader: Box<dyn Read + 'a> = match compression {
        Compression::None => Box::new(reader),
        Compression::Gzip => Box::new(MultiGzDecoder::new(reader)),
        Compression::Zstd => zstd_decoder(reader)?,
    };
    Ok((compression, reader))
}

#[cfg(feature = "zstd")]
fn zstd_decoder<'a, R: Read + 'a>(reader: R) -> Result<Box<dyn Read + 'a>, DecompressError> {
    let decoder = zstd::stream::read::Decoder::new(reader).map_err(DecompressError::Io)?;
    Ok(Box::new(decoder))
}

#[cfg(not(feature = "zstd"))]
fn zstd_decoder<'a, R: Read + 'a>(_reader: R) -> Result<Box<dyn Read + 'a>, DecompressError> {
    Err(DecompressError::Unsupported(
        "zstd compression is not supported by this build (shoal-image was built without the zstd feature)".into(),
    ))
}

/// Why a stream could not be opened for decompression.
#[derive(Debug)]
pub(crate) enum DecompressError {
    Io(io::Error),
    Unsupported(String),
}

impl std::fmt::Display for DecompressError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecompressError::Io(err) => write!(f, "reading: {err}"),
            DecompressError::Unsupported(reason) => f.write_str(reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn detects_by_magic_and_round_trips() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"hello").unwrap();
        let gz = gz.finish().unwrap();
        for (input, expected) in [
            (gz.as_slice(), Compression::Gzip),
            (b"hello".as_slice(), Compression::None),
        ] {
            let (compression, mut reader) = decompress(input).unwrap();
            assert_eq!(compression, expected);
            let mut out = String::new();
            reader.read_to_string(&mut out).unwrap();
            assert_eq!(out, "hello");
        }
        assert!(matches!(
            decompress(&b"BZh91AY"[..]),
            Err(DecompressError::Unsupported(_))
        ));
        let (compression, _) = decompress(&b""[..]).unwrap();
        assert_eq!(compression, Compression::None);
    }

    #[cfg(feature = "zstd")]
    #[test]
    fn zstd_round_trips() {
        let compressed = zstd::stream::encode_all(&b"hello zstd"[..], 1).unwrap();
        let (compression, mut reader) = decompress(compressed.as_slice()).unwrap();
        assert_eq!(compression, Compression::Zstd);
        let mut out = String::new();
        reader.read_to_string(&mut out).unwrap();
        assert_eq!(out, "hello zstd");
    }
}
