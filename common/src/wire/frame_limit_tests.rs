//! Tests of what protocol 2 added: the frame limit in the Welcome (and the version-1
//! Welcome still served), and the bound on a Batch frame's size the agent splits by.

use super::tests::{arb_event, arb_key};
use super::*;
use proptest::prelude::*;

/// The first frames of version 1, as a version-1 agent encodes and decodes them.
#[derive(Debug, Serialize, Deserialize)]
enum FrameV1 {
    Hello(Hello),
    Welcome(WelcomeV1),
    Reject(Reject),
}

#[derive(Debug, Serialize, Deserialize)]
struct WelcomeV1 {
    protocol_version: u16,
    resume_from_seq: u64,
}

fn body_for(version: u16, frame: Frame) -> Vec<u8> {
    let mut codec = FrameCodec::new(DEFAULT_MAX_FRAME_LEN);
    codec.speak_version(version);
    let mut buf = BytesMut::new();
    codec.encode(frame, &mut buf).unwrap();
    buf.split_off(4).to_vec()
}

#[test]
fn version_1_agents_get_the_welcome_they_decode() {
    let welcome = |protocol_version| {
        Frame::Welcome(Welcome {
            protocol_version,
            resume_from_seq: 300,
            max_frame_len: 1 << 20,
        })
    };
    let body = body_for(1, welcome(1));
    let (frame, rest) = postcard::take_from_bytes::<FrameV1>(&body).unwrap();
    assert!(rest.is_empty(), "a version-1 Welcome has no trailing field");
    match frame {
        FrameV1::Welcome(w) => {
            assert_eq!((w.protocol_version, w.resume_from_seq), (1, 300));
        }
        other => panic!("{other:?}"),
    }
    let reject = Frame::Reject(Reject {
        reason: RejectReason::Revoked,
        message: "no".into(),
    });
    match postcard::from_bytes::<FrameV1>(&body_for(1, reject)).unwrap() {
        FrameV1::Reject(r) => assert_eq!(r.reason, RejectReason::Revoked),
        other => panic!("{other:?}"),
    }
    // A version-1 Hello reads as today's Hello, so the collector can tell its version.
    let hello = Hello {
        protocol_version: 1,
        agent_id: "a".into(),
        agent_version: "0.1".into(),
        hostname: "h".into(),
        boot_id: "b".into(),
        last_acked_seq: 9,
    };
    let v1 = postcard::to_stdvec(&FrameV1::Hello(hello.clone())).unwrap();
    assert_eq!(
        postcard::from_bytes::<Frame>(&v1).unwrap(),
        Frame::Hello(hello)
    );
    // Version 2 carries the limit.
    let body = body_for(PROTOCOL_VERSION, welcome(2));
    assert_eq!(
        postcard::from_bytes::<Frame>(&body).unwrap(),
        welcome(2),
        "version 2 round-trips"
    );
    assert!(!postcard::take_from_bytes::<FrameV1>(&body)
        .unwrap()
        .1
        .is_empty());
}

proptest! {
    #[test]
    fn batch_frames_stay_within_their_bound(
        seq in any::<u64>(),
        keys in prop::collection::vec((any::<u32>(), arb_key()), 0..6),
        samples in prop::collection::vec((any::<u32>(), any::<i64>(), any::<f64>()), 0..60),
        events in prop::collection::vec(arb_event(), 0..3),
    ) {
        let keys_bytes: usize =
            keys.iter().map(|(_, k)| postcard_len(k).unwrap()).sum();
        let ts_bytes: usize =
            samples.iter().map(|(_, ts, _)| postcard_len(ts).unwrap()).sum();
        let events_bytes: usize =
            events.iter().map(|e| postcard_len(e).unwrap()).sum();
        let bound = batch_frame_len_bound(
            keys.len(), keys_bytes, samples.len(), ts_bytes, events_bytes);
        let frame = Frame::Batch(Batch {
            seq,
            new_series: keys.into_iter().map(|(id, key)| SeriesDef { id, key }).collect(),
            samples: samples
                .into_iter()
                .map(|(series, ts_ms, value)| Sample { series, ts_ms, value })
                .collect(),
            events,
        });
        prop_assert!(encoded_len(&frame).unwrap() <= bound);
    }
}
