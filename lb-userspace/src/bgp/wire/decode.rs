//! Bytes from a peer to Herald's messages: the header is checked here (RFC 4271 §6.1), OPEN and
//! UPDATE bodies are parsed by netgauze, whose errors come with the NOTIFICATION to send.

use std::collections::{BTreeSet, HashMap};

use bytes::BytesMut;
use ipnet::IpNet;
use netgauze_bgp_pkt::BgpMessage;
use netgauze_bgp_pkt::capabilities::BgpCapability;
use netgauze_bgp_pkt::notification::BgpNotificationMessage;
use netgauze_bgp_pkt::open::BgpOpenMessage;
use netgauze_bgp_pkt::path_attribute::{MpReach, MpUnreach, PathAttributeValue};
use netgauze_bgp_pkt::update::BgpUpdateMessage;
use netgauze_bgp_pkt::wire::deserializer::BgpParsingContext;
use netgauze_iana::address_family::AddressType;
use netgauze_parse_utils::WritablePdu;
use netgauze_parse_utils::reader::SliceReader;
use netgauze_parse_utils::traits::{ParseFrom, ParseFromWithOneInput};

use super::{
    Family, HEADER_LEN, MAX_MESSAGE_LEN, Message, Notification, Open, Session, Update, WireError,
};

const MARKER_LEN: usize = 16;
const OPEN: u8 = 1;
const UPDATE: u8 = 2;
const NOTIFICATION: u8 = 3;
const KEEPALIVE: u8 = 4;
const ROUTE_REFRESH: u8 = 5;
/// RFC 4271 §4.2: the OPEN's fixed part is 10 bytes, the last one the parameters' length.
const OPEN_PARAMS_LEN_AT: usize = HEADER_LEN + 9;
/// RFC 5492: the Capabilities optional parameter.
const CAPABILITIES_PARAM: u8 = 2;
/// RFC 6793: the 4-octet AS capability.
const FOUR_OCTET_AS_CAPABILITY: u8 = 65;

/// Takes one whole message off the front of `buf` when it holds one (`Ok(None)`: need more
/// bytes). Malformed input returns a [`WireError::Malformed`] carrying the NOTIFICATION to send
/// (RFC 4271 §6); the bad message's bytes are gone from `buf`, all of them when the marker or the
/// length field is bad (the framing is lost). `session` says whether AS numbers in UPDATEs are 4
/// octets wide (`None`, before the OPEN exchange: 2 octets).
pub fn decode(buf: &mut BytesMut, session: Option<&Session>) -> Result<Option<Message>, WireError> {
    // A wrong marker byte is an error as soon as it arrives.
    let marker = buf.get(..buf.len().min(MARKER_LEN)).unwrap_or_default();
    if marker.iter().any(|byte| *byte != 0xff) {
        buf.clear();
        return Err(WireError::malformed(
            1,
            1,
            Vec::new(),
            "the 16-byte marker is not all ones",
        ));
    }
    let Some(&[.., len_high, len_low, kind]) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let len_field = [len_high, len_low];
    let len = usize::from(u16::from_be_bytes(len_field));
    let bad_length =
        |why: &str| WireError::malformed(1, 2, len_field.to_vec(), format!("length {len}: {why}"));
    if !(HEADER_LEN..=MAX_MESSAGE_LEN).contains(&len) {
        buf.clear();
        return Err(bad_length("outside 19..=4096"));
    }
    if buf.len() < len {
        return Ok(None);
    }
    let message = buf.split_to(len).freeze();
    let body = message.get(HEADER_LEN..).unwrap_or_default();
    match kind {
        OPEN if len < 29 => Err(bad_length("shorter than an OPEN")),
        OPEN => {
            let tolerant = without_unparsable_capabilities(&message);
            let typed = parse(tolerant.as_deref().unwrap_or(&message), session, 2)?;
            match typed {
                BgpMessage::Open(open) => Ok(Some(Message::Open(open_of(&open)))),
                _ => Err(WireError::malformed(
                    2,
                    0,
                    Vec::new(),
                    "not read as an OPEN",
                )),
            }
        }
        UPDATE if len < 23 => Err(bad_length("shorter than an UPDATE")),
        UPDATE => match parse(&message, session, 3)? {
            BgpMessage::Update(update) => Ok(Some(Message::Update(update_of(&update)))),
            _ => Err(WireError::malformed(
                3,
                0,
                Vec::new(),
                "not read as an UPDATE",
            )),
        },
        // Read here rather than by netgauze, which refuses codes and subcodes it has no type
        // for: a peer's NOTIFICATION must be readable whatever it says.
        NOTIFICATION => match body {
            [code, subcode, data @ ..] => Ok(Some(Message::Notification(Notification {
                code: *code,
                subcode: *subcode,
                data: data.to_vec(),
            }))),
            _ => Err(bad_length("shorter than a NOTIFICATION")),
        },
        KEEPALIVE if len == HEADER_LEN => Ok(Some(Message::Keepalive)),
        KEEPALIVE => Err(bad_length("a KEEPALIVE is 19 bytes")),
        // RFC 2918 / RFC 7313 §5: AFI, subtype, SAFI; subtypes 1 and 2 are exactly that long,
        // a request may be followed by ORF entries (RFC 5291). Herald offers no route refresh
        // capability and resends nothing on request, so only the length is checked (netgauze
        // would also refuse AFI/SAFI pairs and subtypes that the RFCs say to ignore).
        ROUTE_REFRESH => match body {
            [_, _, 1 | 2, _] => Ok(Some(Message::RouteRefresh)),
            [_, _, subtype, _, ..] if !matches!(subtype, 1 | 2) => Ok(Some(Message::RouteRefresh)),
            _ => Err(WireError::malformed(
                7,
                1,
                message.to_vec(),
                format!("a {len}-byte ROUTE-REFRESH"),
            )),
        },
        other => Err(WireError::malformed(
            1,
            3,
            vec![other],
            format!("message type {other}"),
        )),
    }
}

/// Parses a whole framed message with netgauze; on error, the NOTIFICATION netgauze maps it to
/// (code `fallback_code`, subcode 0, should that mapping give nothing).
fn parse(
    message: &[u8],
    session: Option<&Session>,
    fallback_code: u8,
) -> Result<BgpMessage, WireError> {
    let mut ctx = BgpParsingContext::new(
        session.is_some_and(|s| s.four_octet_as),
        HashMap::new(),
        HashMap::new(),
        // RFC 4271 §6.3: a prefix that is not unicast is ignored, not an error.
        false,
        false,
        // Capabilities netgauze cannot parse were cut out before; what is left must parse.
        true,
        // netgauze's recovery from a bad attribute loses its place; the whole UPDATE fails.
        true,
    );
    BgpMessage::parse(&mut SliceReader::new(message), &mut ctx).map_err(|e| {
        let detail = e.to_string();
        let typed = BgpNotificationMessage::from(e);
        WireError::Malformed {
            notification: notification_of(&typed, fallback_code),
            detail,
        }
    })
}

/// netgauze's typed NOTIFICATION as code, subcode and data: the bytes it writes for it.
fn notification_of(typed: &BgpNotificationMessage, fallback_code: u8) -> Notification {
    let mut body = Vec::with_capacity(typed.len());
    match typed.write(&mut body).map(|()| body.as_slice()) {
        Ok([code, subcode, data @ ..]) => Notification {
            code: *code,
            subcode: *subcode,
            data: data.to_vec(),
        },
        _ => Notification::new(fallback_code, 0),
    }
}

fn open_of(typed: &BgpOpenMessage) -> Open {
    let mut open = Open {
        asn: typed.my_asn4(),
        hold_time: typed.hold_time(),
        router_id: typed.bgp_id(),
        four_octet_as: false,
        families: BTreeSet::new(),
        graceful_restart: false,
        restarted: false,
    };
    for capability in typed.capabilities() {
        match capability {
            BgpCapability::FourOctetAs(_) => open.four_octet_as = true,
            BgpCapability::GracefulRestartCapability(gr) => {
                open.graceful_restart = true;
                open.restarted = gr.restart();
            }
            BgpCapability::MultiProtocolExtensions(mp) => {
                if let Some(family) = family_of(mp.address_type()) {
                    open.families.insert(family);
                }
            }
            _ => {}
        }
    }
    open
}

fn family_of(address_type: AddressType) -> Option<Family> {
    match address_type {
        AddressType::Ipv4Unicast => Some(Family::Ipv4Unicast),
        AddressType::Ipv6Unicast => Some(Family::Ipv6Unicast),
        _ => None,
    }
}

fn update_of(typed: &BgpUpdateMessage) -> Update {
    let v4 = |nlri: &[netgauze_bgp_pkt::nlri::Ipv4UnicastAddress]| -> Vec<IpNet> {
        nlri.iter()
            .map(|a| IpNet::V4(a.network().address().trunc()))
            .collect()
    };
    let v6 = |nlri: &[netgauze_bgp_pkt::nlri::Ipv6UnicastAddress]| -> Vec<IpNet> {
        nlri.iter()
            .map(|a| IpNet::V6(a.network().address().trunc()))
            .collect()
    };
    let mut update = Update {
        withdrawn: v4(typed.withdraw_routes()),
        announced: v4(typed.nlri()),
        end_of_rib: typed.end_of_rib().and_then(family_of),
    };
    for attribute in typed.path_attributes() {
        match attribute.value() {
            PathAttributeValue::MpReach(MpReach::Ipv4Unicast { nlri, .. }) => {
                update.announced.extend(v4(nlri));
            }
            PathAttributeValue::MpReach(MpReach::Ipv6Unicast { nlri, .. }) => {
                update.announced.extend(v6(nlri));
            }
            PathAttributeValue::MpUnreach(MpUnreach::Ipv4Unicast { nlri }) => {
                update.withdrawn.extend(v4(nlri));
            }
            PathAttributeValue::MpUnreach(MpUnreach::Ipv6Unicast { nlri }) => {
                update.withdrawn.extend(v6(nlri));
            }
            _ => {}
        }
    }
    update
}

/// RFC 5492 §3: a capability the speaker does not understand is ignored. netgauze fails the
/// whole OPEN on a capability it cannot parse (a multiprotocol capability for an AFI/SAFI it has
/// no type for, a BGP Role value it does not know, ...), and after some of those errors it reads
/// on from the middle of the capability. So each capability is tried alone, and those netgauze
/// refuses are cut out of a copy of the OPEN; all but the 4-octet AS capability, which Herald
/// needs (a malformed one fails the OPEN). `None`: nothing to cut, or the parameters' framing is
/// broken, which netgauze then reports.
fn without_unparsable_capabilities(message: &[u8]) -> Option<Vec<u8>> {
    let params_len = usize::from(*message.get(OPEN_PARAMS_LEN_AT)?);
    let params_end = OPEN_PARAMS_LEN_AT + 1 + params_len;
    let mut params = message.get(OPEN_PARAMS_LEN_AT + 1..params_end)?;
    let mut kept = Vec::with_capacity(params_len);
    let mut cut = false;
    while let [kind, len, rest @ ..] = params {
        let value = rest.get(..usize::from(*len))?;
        params = rest.get(value.len()..)?;
        if *kind != CAPABILITIES_PARAM {
            kept.extend_from_slice(&[*kind, *len]);
            kept.extend_from_slice(value);
            continue;
        }
        let mut capabilities = value;
        let mut kept_capabilities = Vec::with_capacity(value.len());
        while let [code, len, ..] = capabilities {
            let whole = capabilities.get(..2 + usize::from(*len))?;
            capabilities = capabilities.get(whole.len()..)?;
            if *code == FOUR_OCTET_AS_CAPABILITY || parses_alone(whole) {
                kept_capabilities.extend_from_slice(whole);
            } else {
                tracing::debug!(code, "ignoring a BGP capability netgauze cannot parse");
                cut = true;
            }
        }
        if !capabilities.is_empty() {
            return None;
        }
        if !kept_capabilities.is_empty() {
            kept.extend_from_slice(&[CAPABILITIES_PARAM, kept_capabilities.len() as u8]);
            kept.extend_from_slice(&kept_capabilities);
        }
    }
    if !cut || !params.is_empty() {
        return None;
    }
    // Only cut: the parameters and the message are shorter than they were, lengths still fit.
    let mut out = Vec::with_capacity(message.len());
    out.extend_from_slice(message.get(..OPEN_PARAMS_LEN_AT)?);
    out.push(kept.len() as u8);
    out.extend_from_slice(&kept);
    out.extend_from_slice(message.get(params_end..)?);
    let total = (out.len() as u16).to_be_bytes();
    out.get_mut(MARKER_LEN..MARKER_LEN + 2)?
        .copy_from_slice(&total);
    Some(out)
}

fn parses_alone(capability: &[u8]) -> bool {
    let mut reader = SliceReader::new(capability);
    BgpCapability::parse(&mut reader).is_ok() && reader.is_empty()
}
