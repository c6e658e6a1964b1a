//! The agent ↔ collector protocol: the [`Frame`] enum, its payload types and the
//! length-delimited postcard codec. Nothing else in the workspace defines wire bytes.
//!
//! Framing: a 4-byte big-endian length prefix (tokio-util `LengthDelimitedCodec`) followed by
//! one postcard-encoded [`Frame`]. The codec refuses a length prefix above the configured
//! maximum before reading or allocating the body, so a hostile peer can make the decoder
//! allocate at most `max_frame_len` bytes.

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};

mod renewal;

pub use renewal::{RenewRequest, RenewResult};

/// Version of this protocol. Bump on any incompatible change to [`Frame`]. Version 2 added
/// [`Welcome::max_frame_len`]; the collector still serves version-1 agents, encoding their
/// Welcome without it ([`FrameCodec::speak_version`]). Version 3 added certificate renewal
/// ([`Frame::RenewRequest`], [`Frame::RenewResult`]), which only version-3 agents send.
pub const PROTOCOL_VERSION: u16 = 3;

/// Oldest agent protocol version the collector still serves.
pub const MIN_PROTOCOL_VERSION: u16 = 1;

/// Default maximum frame size (1 MiB), see DESIGN.md.
pub const DEFAULT_MAX_FRAME_LEN: usize = 1024 * 1024;

/// Smallest frame limit either side may be configured with (and an agent accepts in a
/// Welcome): below it a batch of one sample with an ordinary series key may not fit.
pub const MIN_FRAME_LIMIT: usize = 1024;

/// One message on the agent ↔ collector stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Frame {
    /// Agent → collector, first frame of every connection.
    Hello(Hello),
    /// Collector → agent: the Hello was accepted.
    Welcome(Welcome),
    /// Collector → agent: the Hello was refused; the collector closes the stream after it.
    Reject(Reject),
    /// Agent → collector: samples and events under one sequence number.
    Batch(Batch),
    /// Collector → agent: every batch up to and including `seq` is durably committed.
    Ack { seq: u64 },
    /// Collector → agent: an operator command.
    Command(Command),
    /// Agent → collector: the outcome of a [`Command`].
    CommandResult(CommandResult),
    /// Agent → collector: renew my certificate (since version 3).
    RenewRequest(RenewRequest),
    /// Collector → agent: the renewed certificate, or why not (since version 3).
    RenewResult(RenewResult),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol_version: u16,
    /// Must equal the identity in the client certificate's SAN.
    pub agent_id: String,
    pub agent_version: String,
    pub hostname: String,
    /// The host's boot id (`/proc/sys/kernel/random/boot_id`), to tell reboots apart.
    pub boot_id: String,
    /// Highest seq the agent knows to be acknowledged (0 when none).
    pub last_acked_seq: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Welcome {
    pub protocol_version: u16,
    /// The collector has committed every seq below this one; the agent resumes here.
    pub resume_from_seq: u64,
    /// Largest frame body the collector accepts (its `[ingest] max_frame_size`). The agent
    /// never sends a bigger frame: it splits spool records to fit and sets aside what cannot
    /// fit even alone. Since protocol version 2.
    pub max_frame_len: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reject {
    pub reason: RejectReason,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RejectReason {
    ProtocolVersion,
    IdentityMismatch,
    Revoked,
    Overloaded,
    Internal,
}

/// A metric series: name plus labels sorted by label name. The host is not a label here: the
/// collector takes it from the connection's authenticated identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SeriesKey {
    pub name: String,
    pub labels: Vec<(String, String)>,
}

impl SeriesKey {
    /// Builds a key, sorting labels so equal series always compare equal.
    pub fn new(name: impl Into<String>, labels: &[(&str, &str)]) -> Self {
        let mut labels: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        labels.sort();
        SeriesKey {
            name: name.into(),
            labels,
        }
    }

    /// Labels rendered as `k="v",k2="v2"` (the form stored and shown by the collector).
    /// Values escape `\\`, `"` and newlines; keys escape those and `=` and `,` too, so the
    /// text is unambiguous whatever an agent sends (see [`SeriesKey::parse_labels_text`]).
    pub fn labels_text(&self) -> String {
        let mut out = String::new();
        for (i, (k, v)) in self.labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            escape_into(&mut out, k, true);
            out.push_str("=\"");
            escape_into(&mut out, v, false);
            out.push('"');
        }
        out
    }

    /// Parses [`SeriesKey::labels_text`] back into pairs: the one reader of the stored form.
    /// `None` when the text is not in that form.
    pub fn parse_labels_text(text: &str) -> Option<Vec<(String, String)>> {
        let mut pairs = Vec::new();
        let mut chars = text.chars().peekable();
        while chars.peek().is_some() {
            let mut key = String::new();
            loop {
                match chars.next()? {
                    '=' => break,
                    '\\' => key.push(unescape(chars.next()?, true)?),
                    '"' | ',' => return None,
                    c => key.push(c),
                }
            }
            if key.is_empty() || chars.next()? != '"' {
                return None;
            }
            let mut value = String::new();
            loop {
                match chars.next()? {
                    '"' => break,
                    '\\' => value.push(unescape(chars.next()?, false)?),
                    c => value.push(c),
                }
            }
            pairs.push((key, value));
            match chars.next() {
                None => break,
                Some(',') if chars.peek().is_some() => {}
                Some(_) => return None,
            }
        }
        Some(pairs)
    }
}

/// Declares a series id for the rest of the connection (series are interned per connection).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesDef {
    pub id: u32,
    pub key: SeriesKey,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// A series id declared earlier on this connection (or in this batch).
    pub series: u32,
    /// Milliseconds since the Unix epoch, taken at the agent.
    pub ts_ms: i64,
    pub value: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    /// Per agent, strictly increasing, persisted in the agent's spool.
    pub seq: u64,
    pub new_series: Vec<SeriesDef>,
    pub samples: Vec<Sample>,
    pub events: Vec<Event>,
}

/// Something that happened at the agent, stored by the collector with time and host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Event {
    /// The agent's spool overflowed and dropped batches `first_seq..=last_seq`, holding
    /// `samples` samples taken between `from_ts_ms` and `to_ts_ms`. The collector records a
    /// gap there, never zeros.
    Gap {
        first_seq: u64,
        last_seq: u64,
        samples: u64,
        from_ts_ms: i64,
        to_ts_ms: i64,
    },
    /// The agent's spool skipped a corrupted record it could not read back.
    SpoolCorruption { records: u64, bytes: u64 },
    /// A supervised MCP server changed state or reported a probe result.
    Server {
        ts_ms: i64,
        server: String,
        kind: String,
        detail: String,
    },
}

/// An operator command sent down an agent's stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    pub id: u64,
    pub action: CommandAction,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CommandAction {
    RestartServer { server: String },
    StopServer { server: String },
    StartServer { server: String },
    ApproveDrift { server: String },
    Reload,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandResult {
    pub id: u64,
    pub ok: bool,
    pub message: String,
}

/// Why a frame could not be decoded or encoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed frame: {0}")]
    Malformed(#[from] postcard::Error),
}

/// Length-delimited postcard codec for [`Frame`]s.
#[derive(Debug)]
pub struct FrameCodec {
    inner: LengthDelimitedCodec,
    /// The protocol version frames are encoded for ([`PROTOCOL_VERSION`] unless told).
    version: u16,
}

/// Variant index of [`Frame::Welcome`] in postcard's encoding (a varint `u32`).
const WELCOME_VARIANT: u32 = 1;

impl FrameCodec {
    pub fn new(max_frame_len: usize) -> Self {
        FrameCodec {
            inner: LengthDelimitedCodec::builder()
                .length_field_length(4)
                .max_frame_length(max_frame_len)
                .new_codec(),
            version: PROTOCOL_VERSION,
        }
    }

    /// Encodes later frames for a peer speaking `version` (the collector calls this with
    /// the Hello's version). Only the Welcome differs: version 1 has no `max_frame_len`.
    pub fn speak_version(&mut self, version: u16) {
        self.version = version;
    }
}

/// The encoded size of `frame`'s body (without the 4-byte length prefix): what the peer's
/// frame limit is compared with.
pub fn encoded_len(frame: &Frame) -> Result<usize, CodecError> {
    postcard_len(frame)
}

/// The postcard-encoded size of any wire value, counted without encoding it.
pub fn postcard_len<T: Serialize + ?Sized>(value: &T) -> Result<usize, CodecError> {
    let size = postcard::ser_flavors::Size::default();
    Ok(postcard::serialize_with_flavor::<T, _, usize>(value, size)?)
}

/// The most bytes a `Frame::Batch` can take (without the length prefix) when it carries
/// `series` series keys, `samples` samples and events whose postcard encodings take
/// `keys_bytes`, `sample_ts_bytes` (the timestamps' varints only) and `events_bytes`,
/// whatever series ids the connection has interned: every key may be new (a `SeriesDef`
/// adds its id, at most 5 bytes) and every sample's id takes at most 5 bytes.
pub fn batch_frame_len_bound(
    series: usize,
    keys_bytes: usize,
    samples: usize,
    sample_ts_bytes: usize,
    events_bytes: usize,
) -> usize {
    // Variant tag (1) + seq (at most 10) + three sequence lengths (at most 5 each).
    const FIXED: usize = 1 + 10 + 3 * 5;
    FIXED
        .saturating_add(keys_bytes)
        .saturating_add(series.saturating_mul(5))
        .saturating_add(sample_ts_bytes)
        .saturating_add(samples.saturating_mul(5 + 8))
        .saturating_add(events_bytes)
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        match self.inner.decode(src)? {
            Some(body) => Ok(Some(postcard::from_bytes(&body)?)),
            None => Ok(None),
        }
    }
}

// Only by value: a second impl for `&Frame` would make every `flush()` on a `Framed`
// ambiguous for type inference.
impl Encoder<Frame> for FrameCodec {
    type Error = CodecError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        let body = match &frame {
            // Version 1's Welcome: the same variant, without `max_frame_len`.
            Frame::Welcome(w) if self.version < 2 => {
                postcard::to_stdvec(&(WELCOME_VARIANT, w.protocol_version, w.resume_from_seq))?
            }
            _ => postcard::to_stdvec(&frame)?,
        };
        self.inner.encode(Bytes::from(body), dst)?;
        Ok(())
    }
}

/// Appends `text` escaped for label text: `\\`, `"`, newline always; `=` and `,` in keys.
fn escape_into(out: &mut String, text: &str, key: bool) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '=' | ',' if key => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
}

/// The character an escape `\\c` stands for, if `c` may be escaped there.
fn unescape(c: char, key: bool) -> Option<char> {
    match c {
        '\\' => Some('\\'),
        '"' => Some('"'),
        'n' => Some('\n'),
        '=' | ',' if key => Some(c),
        _ => None,
    }
}

#[cfg(test)]
mod frame_limit_tests;
#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(super) fn arb_key() -> impl Strategy<Value = SeriesKey> {
        (
            "[a-z_]{1,20}",
            prop::collection::vec(("[a-z]{1,8}", ".{0,12}"), 0..4),
        )
            .prop_map(|(name, labels)| SeriesKey { name, labels })
    }

    pub(super) fn arb_event() -> impl Strategy<Value = Event> {
        prop_oneof![
            (
                any::<u64>(),
                any::<u64>(),
                any::<u64>(),
                any::<i64>(),
                any::<i64>()
            )
                .prop_map(|(first_seq, last_seq, samples, from_ts_ms, to_ts_ms)| {
                    Event::Gap {
                        first_seq,
                        last_seq,
                        samples,
                        from_ts_ms,
                        to_ts_ms,
                    }
                }),
            (any::<u64>(), any::<u64>())
                .prop_map(|(records, bytes)| Event::SpoolCorruption { records, bytes }),
            (any::<i64>(), ".{0,10}", ".{0,10}", ".{0,30}").prop_map(
                |(ts_ms, server, kind, detail)| Event::Server {
                    ts_ms,
                    server,
                    kind,
                    detail
                }
            ),
        ]
    }

    fn arb_frame() -> impl Strategy<Value = Frame> {
        let hello = (
            any::<u16>(),
            ".{0,16}",
            ".{0,8}",
            ".{0,16}",
            ".{0,36}",
            any::<u64>(),
        )
            .prop_map(
                |(protocol_version, agent_id, agent_version, hostname, boot_id, last_acked_seq)| {
                    Frame::Hello(Hello {
                        protocol_version,
                        agent_id,
                        agent_version,
                        hostname,
                        boot_id,
                        last_acked_seq,
                    })
                },
            );
        let batch = (
            any::<u64>(),
            prop::collection::vec((any::<u32>(), arb_key()), 0..4),
            prop::collection::vec((any::<u32>(), any::<i64>(), any::<f64>()), 0..50),
            prop::collection::vec(arb_event(), 0..3),
        )
            .prop_map(|(seq, defs, samples, events)| {
                Frame::Batch(Batch {
                    seq,
                    new_series: defs
                        .into_iter()
                        .map(|(id, key)| SeriesDef { id, key })
                        .collect(),
                    samples: samples
                        .into_iter()
                        .map(|(series, ts_ms, value)| Sample {
                            series,
                            ts_ms,
                            value,
                        })
                        .collect(),
                    events,
                })
            });
        let action = prop_oneof![
            ".{0,8}".prop_map(|server| CommandAction::RestartServer { server }),
            ".{0,8}".prop_map(|server| CommandAction::StopServer { server }),
            ".{0,8}".prop_map(|server| CommandAction::StartServer { server }),
            ".{0,8}".prop_map(|server| CommandAction::ApproveDrift { server }),
            Just(CommandAction::Reload),
        ];
        prop_oneof![
            hello,
            (any::<u16>(), any::<u64>(), any::<u32>()).prop_map(
                |(protocol_version, resume_from_seq, max_frame_len)| {
                    Frame::Welcome(Welcome {
                        protocol_version,
                        resume_from_seq,
                        max_frame_len,
                    })
                }
            ),
            (".{0,20}").prop_map(|message| Frame::Reject(Reject {
                reason: RejectReason::IdentityMismatch,
                message
            })),
            batch,
            any::<u64>().prop_map(|seq| Frame::Ack { seq }),
            (any::<u64>(), action).prop_map(|(id, action)| Frame::Command(Command { id, action })),
            (any::<u64>(), any::<bool>(), ".{0,20}").prop_map(|(id, ok, message)| {
                Frame::CommandResult(CommandResult { id, ok, message })
            }),
            proptest::collection::vec(any::<u8>(), 0..64)
                .prop_map(|csr_der| Frame::RenewRequest(RenewRequest { csr_der })),
            (any::<bool>(), ".{0,20}", ".{0,20}").prop_map(|(ok, certificate_pem, message)| {
                Frame::RenewResult(RenewResult {
                    ok,
                    certificate_pem,
                    message,
                })
            }),
        ]
    }

    /// NaN != NaN, so compare encodings rather than values.
    fn same(a: &Frame, b: &Frame) -> bool {
        postcard::to_stdvec(a).ok() == postcard::to_stdvec(b).ok()
    }

    #[test]
    fn label_text_escapes_keys() {
        let key = SeriesKey::new("m", &[("a=\"x\",b", "1")]);
        assert_eq!(key.labels_text(), "a\\=\\\"x\\\"\\,b=\"1\"");
        assert_eq!(
            SeriesKey::parse_labels_text(&key.labels_text()),
            Some(key.labels)
        );
    }

    #[test]
    fn label_text_parse_refuses_malformed() {
        assert_eq!(SeriesKey::parse_labels_text(""), Some(vec![]));
        for bad in [
            "a",
            "a=\"x",
            "a=\"x\",",
            "=\"x\"",
            "a=\"x\"b=\"y\"",
            "a=\"\\q\"",
        ] {
            assert_eq!(SeriesKey::parse_labels_text(bad), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn label_text_round_trips(
            labels in proptest::collection::vec((".{1,8}", ".{0,12}"), 0..5)
        ) {
            let refs: Vec<(&str, &str)> =
                labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let key = SeriesKey::new("m", &refs);
            prop_assert_eq!(SeriesKey::parse_labels_text(&key.labels_text()), Some(key.labels));
        }

        #[test]
        fn every_frame_round_trips(frame in arb_frame()) {
            let mut codec = FrameCodec::new(DEFAULT_MAX_FRAME_LEN);
            let mut buf = BytesMut::new();
            codec.encode(frame.clone(), &mut buf).unwrap();
            let back = codec.decode(&mut buf).unwrap().expect("a whole frame");
            prop_assert!(same(&frame, &back));
            prop_assert!(buf.is_empty());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
            let mut codec = FrameCodec::new(1024);
            let mut buf = BytesMut::from(&bytes[..]);
            // Either a frame, an error, or "need more"; never a panic and never a buffer
            // reservation beyond the frame limit plus the 4-byte header.
            while let Ok(Some(_)) = codec.decode(&mut buf) {}
            prop_assert!(buf.capacity() <= bytes.len().max(1024 + 4) + 64);
        }

        #[test]
        fn arbitrary_bodies_never_panic(body in prop::collection::vec(any::<u8>(), 0..512)) {
            let mut codec = FrameCodec::new(1024);
            let mut buf = BytesMut::new();
            buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
            buf.extend_from_slice(&body);
            let _ = codec.decode(&mut buf);
        }
    }

    #[test]
    fn oversized_length_prefix_is_refused_before_reading_the_body() {
        let mut codec = FrameCodec::new(1024);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&u32::MAX.to_be_bytes());
        let err = codec.decode(&mut buf).unwrap_err();
        assert!(matches!(err, CodecError::Io(_)), "{err}");
        assert!(buf.capacity() < 1024 * 1024);
    }

    #[test]
    fn truncated_frame_waits_for_more() {
        let mut codec = FrameCodec::new(1024);
        let mut whole = BytesMut::new();
        codec.encode(Frame::Ack { seq: 7 }, &mut whole).unwrap();
        let mut part = BytesMut::from(&whole[..whole.len() - 1]);
        assert!(codec.decode(&mut part).unwrap().is_none());
    }

    #[test]
    fn labels_are_sorted_and_escaped() {
        let k = SeriesKey::new("m", &[("z", "a\"b"), ("a", "x")]);
        assert_eq!(k.labels_text(), r#"a="x",z="a\"b""#);
    }
}
