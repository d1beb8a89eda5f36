//! Herald's messages to bytes: netgauze values built from Herald's types, written by netgauze,
//! with the 4096-byte limit and the attribute lengths checked here (netgauze writes an UPDATE
//! of any size and trusts the caller's extended-length flag).

use bytes::{BufMut, Bytes, BytesMut};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use netgauze_bgp_pkt::BgpMessage;
use netgauze_bgp_pkt::capabilities::{
    BgpCapability, FourOctetAsCapability, GracefulRestartAddressFamily, GracefulRestartCapability,
    MultiProtocolExtensionsCapability,
};
use netgauze_bgp_pkt::community::{Community as StandardCommunity, LargeCommunity};
use netgauze_bgp_pkt::nlri::{Ipv4Unicast, Ipv4UnicastAddress, Ipv6Unicast, Ipv6UnicastAddress};
use netgauze_bgp_pkt::notification::BgpNotificationMessage;
use netgauze_bgp_pkt::open::{BgpOpenMessage, BgpOpenMessageParameter};
use netgauze_bgp_pkt::path_attribute::{
    As2PathSegment, As4Path, As4PathSegment, AsPath, AsPathSegmentType, Communities,
    LargeCommunities, LocalPreference, MpReach, MpUnreach, NextHop, Origin, PathAttribute,
    PathAttributeValue,
};
use netgauze_bgp_pkt::update::BgpUpdateMessage;
use netgauze_iana::address_family::AddressType;
use netgauze_parse_utils::WritablePdu;
use netgauze_parse_utils::reader::SliceReader;
use netgauze_parse_utils::traits::ParseFrom;

use super::{
    AS_TRANS, Family, GRACEFUL_RESTART_TIME_S, HEADER_LEN, MAX_MESSAGE_LEN, Notification, Open,
    RouteAttrs, Session, WireError,
};
use crate::config::Community;

/// Withdrawn Routes Length and Total Path Attribute Length (RFC 4271 §4.3).
const UPDATE_FIXED_LEN: usize = 4;
/// Attribute flags, type and a 2-octet (extended) length.
const ATTR_HEADER_MAX: usize = 4;
/// AFI and SAFI, the start of both MP attributes (RFC 4760).
const AFI_SAFI_LEN: usize = 3;
/// The most segments' worth of AS numbers one AS_PATH segment can count (a 1-octet count).
const SEGMENT_MAX: usize = 255;

pub(super) fn address_type(family: Family) -> AddressType {
    match family {
        Family::Ipv4Unicast => AddressType::Ipv4Unicast,
        Family::Ipv6Unicast => AddressType::Ipv6Unicast,
    }
}

pub fn encode_open(open: &Open) -> Bytes {
    let mut capabilities: Vec<BgpCapability> = open
        .families
        .iter()
        .map(|family| {
            BgpCapability::MultiProtocolExtensions(MultiProtocolExtensionsCapability::new(
                address_type(*family),
            ))
        })
        .collect();
    if open.four_octet_as {
        capabilities.push(BgpCapability::FourOctetAs(FourOctetAsCapability::new(
            open.asn,
        )));
    }
    if open.graceful_restart {
        let families: Vec<GracefulRestartAddressFamily> = if open.families.is_empty() {
            vec![GracefulRestartAddressFamily::new(
                true,
                AddressType::Ipv4Unicast,
            )]
        } else {
            open.families
                .iter()
                .map(|f| GracefulRestartAddressFamily::new(true, address_type(*f)))
                .collect()
        };
        capabilities.push(BgpCapability::GracefulRestartCapability(
            GracefulRestartCapability::new(
                open.restarted,
                false,
                GRACEFUL_RESTART_TIME_S,
                families,
            ),
        ));
    }
    // All capabilities in one Capabilities optional parameter (RFC 5492 allows one or several).
    let params = if capabilities.is_empty() {
        Vec::new()
    } else {
        vec![BgpOpenMessageParameter::new_capabilities(capabilities)]
    };
    let my_as = u16::try_from(open.asn).unwrap_or(AS_TRANS);
    let message = BgpOpenMessage::new(my_as, open.hold_time, open.router_id, params);
    or_nothing("OPEN", to_bytes(&BgpMessage::Open(message)))
}

pub fn encode_keepalive() -> Bytes {
    or_nothing("KEEPALIVE", to_bytes(&BgpMessage::KeepAlive))
}

/// Data beyond what fits in 4096 bytes is cut off. netgauze types only the codes and subcodes
/// it knows; any other pair (Cease 0, RFC 9687's code 8, ...) is written here byte for byte.
pub fn encode_notification(n: &Notification) -> Bytes {
    let room = MAX_MESSAGE_LEN - HEADER_LEN - 2;
    let data = n.data.get(..room).unwrap_or(&n.data);
    let mut body = Vec::with_capacity(2 + data.len());
    body.extend_from_slice(&[n.code, n.subcode]);
    body.extend_from_slice(data);
    if let Ok(typed) = BgpNotificationMessage::parse(&mut SliceReader::new(&body))
        && let Ok(bytes) = to_bytes(&BgpMessage::Notification(typed))
    {
        return bytes;
    }
    raw_message(3, &body)
}

/// Announces `prefixes` (all of one family) with `attrs`, packed into as few UPDATE messages as
/// fit the 4096-byte limit. IPv4 prefixes go in the classic NLRI field with NEXT_HOP when the
/// session is classic IPv4 (families == {Ipv4Unicast} and the next hop is IPv4), else in
/// MP_REACH_NLRI; IPv6 always in MP_REACH_NLRI, whose next hop must then be IPv6.
///
/// ORIGIN is IGP, as MetalLB's native speaker sends it (and FRR for `network` routes). A family
/// the session did not negotiate is an error, as is a prefix netgauze does not take as unicast
/// (multicast, broadcast). Prefixes are sent with their host bits cleared.
pub fn encode_announce(
    prefixes: &[IpNet],
    attrs: &RouteAttrs,
    session: &Session,
) -> Result<Vec<Bytes>, WireError> {
    let Some(first) = prefixes.first() else {
        return Ok(Vec::new());
    };
    let family = Family::of(first);
    if let Some(other) = prefixes.iter().find(|p| Family::of(p) != family) {
        return Err(WireError::Unencodable(format!(
            "{other} and {first} are of different families: announce one family at a time"
        )));
    }
    negotiated(family, session)?;
    let (v4, v6) = split(prefixes);
    let classic = family == Family::Ipv4Unicast && session.is_classic() && attrs.next_hop.is_ipv4();
    let (before, after) = route_attributes(attrs, session, classic)?;
    let fixed = HEADER_LEN + UPDATE_FIXED_LEN + total_len(&before) + total_len(&after);
    let room = MAX_MESSAGE_LEN.checked_sub(fixed).ok_or_else(|| {
        WireError::Unencodable(format!(
            "the path attributes take {fixed} bytes, more than a message holds"
        ))
    })?;
    if classic {
        let all: Vec<PathAttribute> = before.into_iter().chain(after).collect();
        return pack(ipv4_nlri(&v4)?, room)?
            .into_iter()
            .map(|chunk| update(Vec::new(), all.clone(), chunk))
            .collect();
    }
    let with_mp = |mp: MpReach| -> Result<Bytes, WireError> {
        let mut all = before.clone();
        all.push(attribute(PathAttributeValue::MpReach(mp))?);
        all.extend(after.iter().cloned());
        update(Vec::new(), all, Vec::new())
    };
    // The MP_REACH_NLRI header: attribute header, AFI/SAFI, next hop length, next hop, reserved.
    let next_hop_len = if attrs.next_hop.is_ipv4() { 4 } else { 16 };
    let room = room.saturating_sub(ATTR_HEADER_MAX + AFI_SAFI_LEN + 1 + next_hop_len + 1);
    match family {
        Family::Ipv4Unicast => pack(ipv4_nlri(&v4)?, room)?
            .into_iter()
            .map(|nlri| {
                with_mp(MpReach::Ipv4Unicast {
                    next_hop: attrs.next_hop,
                    next_hop_local: None,
                    nlri: nlri.into(),
                })
            })
            .collect(),
        Family::Ipv6Unicast => {
            let std::net::IpAddr::V6(next_hop) = attrs.next_hop else {
                return Err(WireError::Unencodable(format!(
                    "IPv6 prefixes need an IPv6 next hop, not {}",
                    attrs.next_hop
                )));
            };
            pack(ipv6_nlri(&v6)?, room)?
                .into_iter()
                .map(|nlri| {
                    with_mp(MpReach::Ipv6Unicast {
                        next_hop_global: next_hop,
                        next_hop_local: None,
                        nlri: nlri.into(),
                    })
                })
                .collect()
        }
    }
}

/// Withdraws `prefixes` (mixed families allowed): IPv4 in the classic withdrawn-routes field on
/// classic sessions, else MP_UNREACH_NLRI; packed into few messages, one family per message.
pub fn encode_withdraw(prefixes: &[IpNet], session: &Session) -> Result<Vec<Bytes>, WireError> {
    let (v4, v6) = split(prefixes);
    let mut out = Vec::new();
    let classic_room = MAX_MESSAGE_LEN - HEADER_LEN - UPDATE_FIXED_LEN;
    let mp_room = classic_room - ATTR_HEADER_MAX - AFI_SAFI_LEN;
    if !v4.is_empty() {
        negotiated(Family::Ipv4Unicast, session)?;
        let nlri = ipv4_nlri(&v4)?;
        if session.is_classic() {
            for chunk in pack(nlri, classic_room)? {
                out.push(update(chunk, Vec::new(), Vec::new())?);
            }
        } else {
            for chunk in pack(nlri, mp_room)? {
                out.push(unreach(MpUnreach::Ipv4Unicast { nlri: chunk.into() })?);
            }
        }
    }
    if !v6.is_empty() {
        negotiated(Family::Ipv6Unicast, session)?;
        for chunk in pack(ipv6_nlri(&v6)?, mp_room)? {
            out.push(unreach(MpUnreach::Ipv6Unicast { nlri: chunk.into() })?);
        }
    }
    Ok(out)
}

/// RFC 4724 §2: an empty UPDATE for IPv4 on a classic session, else an UPDATE holding only an
/// empty MP_UNREACH_NLRI of the family.
pub fn encode_end_of_rib(family: Family, session: &Session) -> Bytes {
    let encoded = if family == Family::Ipv4Unicast && session.is_classic() {
        update(Vec::new(), Vec::new(), Vec::new())
    } else {
        unreach(match family {
            Family::Ipv4Unicast => MpUnreach::Ipv4Unicast { nlri: Box::new([]) },
            Family::Ipv6Unicast => MpUnreach::Ipv6Unicast { nlri: Box::new([]) },
        })
    };
    or_nothing("End-of-RIB", encoded)
}

fn negotiated(family: Family, session: &Session) -> Result<(), WireError> {
    if session.families.contains(&family) {
        Ok(())
    } else {
        Err(WireError::Unencodable(format!(
            "{family:?} was not negotiated on this session"
        )))
    }
}

/// The attributes of an announcement in ascending type order (RFC 4271 §5), split where
/// MP_REACH_NLRI (type 14) goes: ORIGIN, AS_PATH, NEXT_HOP, LOCAL_PREF, COMMUNITIES before it;
/// AS4_PATH, LARGE_COMMUNITY after.
fn route_attributes(
    attrs: &RouteAttrs,
    session: &Session,
    classic: bool,
) -> Result<(Vec<PathAttribute>, Vec<PathAttribute>), WireError> {
    let mut before = vec![attribute(PathAttributeValue::Origin(Origin::IGP))?];
    let segments4 = || -> Vec<As4PathSegment> {
        attrs
            .as_path
            .chunks(SEGMENT_MAX)
            .map(|asns| As4PathSegment::new(AsPathSegmentType::AsSequence, asns.to_vec()))
            .collect()
    };
    let mut as4_path = None;
    let as_path = if session.four_octet_as {
        AsPath::As4PathSegments(segments4().into())
    } else {
        // RFC 6793 §4.2.2: to a 2-octet speaker, AS_TRANS stands in for each ASN above 65535
        // and AS4_PATH carries the real path.
        if attrs.as_path.iter().any(|asn| *asn > u32::from(u16::MAX)) {
            as4_path = Some(As4Path::new(segments4()));
        }
        let segments: Vec<As2PathSegment> = attrs
            .as_path
            .chunks(SEGMENT_MAX)
            .map(|asns| {
                let narrow: Vec<u16> = asns
                    .iter()
                    .map(|asn| u16::try_from(*asn).unwrap_or(AS_TRANS))
                    .collect();
                As2PathSegment::new(AsPathSegmentType::AsSequence, narrow)
            })
            .collect();
        AsPath::As2PathSegments(segments.into())
    };
    before.push(attribute(PathAttributeValue::AsPath(as_path))?);
    if classic && let std::net::IpAddr::V4(next_hop) = attrs.next_hop {
        before.push(attribute(PathAttributeValue::NextHop(NextHop::new(
            next_hop,
        )))?);
    }
    if let Some(pref) = attrs.local_pref {
        before.push(attribute(PathAttributeValue::LocalPreference(
            LocalPreference::new(pref),
        ))?);
    }
    let mut communities = attrs.communities.clone();
    communities.sort();
    communities.dedup();
    let mut standard = Vec::new();
    let mut large = Vec::new();
    for community in communities {
        match community {
            Community::Standard(high, low) => standard.push(StandardCommunity::new(
                (u32::from(high) << 16) | u32::from(low),
            )),
            Community::Large(a, b, c) => large.push(LargeCommunity::new(a, b, c)),
        }
    }
    if !standard.is_empty() {
        before.push(attribute(PathAttributeValue::Communities(
            Communities::new(standard),
        ))?);
    }
    let mut after = Vec::new();
    if let Some(path) = as4_path {
        after.push(attribute(PathAttributeValue::As4Path(path))?);
    }
    if !large.is_empty() {
        after.push(attribute(PathAttributeValue::LargeCommunities(
            LargeCommunities::new(large),
        ))?);
    }
    Ok((before, after))
}

/// A path attribute with the flags its type requires (well-known or optional, transitive or
/// not, as netgauze's validation expects), and the extended-length flag when the value is over
/// 255 bytes: netgauze writes a 2-octet length past 255 whether the flag is set or not.
fn attribute(value: PathAttributeValue) -> Result<PathAttribute, WireError> {
    let optional = value.can_be_optional().unwrap_or(true);
    let transitive = value.can_be_transitive().unwrap_or(true);
    let refused = |(_, why)| WireError::Unencodable(format!("path attribute: {why}"));
    let short = PathAttribute::from(optional, transitive, false, false, value).map_err(refused)?;
    // Flags, type and the 1-octet length come before the value.
    if u8::try_from(short.len() - 3).is_ok() {
        return Ok(short);
    }
    PathAttribute::from(optional, transitive, false, true, short.value().clone()).map_err(refused)
}

fn total_len(attrs: &[PathAttribute]) -> usize {
    attrs.iter().map(WritablePdu::len).sum()
}

fn split(prefixes: &[IpNet]) -> (Vec<Ipv4Net>, Vec<Ipv6Net>) {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for net in prefixes {
        match net {
            IpNet::V4(net) => v4.push(net.trunc()),
            IpNet::V6(net) => v6.push(net.trunc()),
        }
    }
    (v4, v6)
}

/// Whether `prefix` is one an UPDATE can carry as unicast (not multicast, not the IPv4
/// broadcast address): the test [`encode_announce`] applies.
pub fn is_unicast(prefix: &IpNet) -> bool {
    match prefix {
        IpNet::V4(net) => Ipv4Unicast::from_net(net.trunc()).is_ok(),
        IpNet::V6(net) => Ipv6Unicast::from_net(net.trunc()).is_ok(),
    }
}

fn ipv4_nlri(nets: &[Ipv4Net]) -> Result<Vec<Ipv4UnicastAddress>, WireError> {
    nets.iter()
        .map(|net| {
            Ipv4Unicast::from_net(*net)
                .map(Ipv4UnicastAddress::new_no_path_id)
                .map_err(|_| WireError::Unencodable(format!("{net} is not a unicast prefix")))
        })
        .collect()
}

fn ipv6_nlri(nets: &[Ipv6Net]) -> Result<Vec<Ipv6UnicastAddress>, WireError> {
    nets.iter()
        .map(|net| {
            Ipv6Unicast::from_net(*net)
                .map(|unicast| Ipv6UnicastAddress::new(None, unicast))
                .map_err(|_| WireError::Unencodable(format!("{net} is not a unicast prefix")))
        })
        .collect()
}

/// Splits prefixes into runs whose encoded size fits `room` bytes, keeping their order.
fn pack<T, E>(items: Vec<T>, room: usize) -> Result<Vec<Vec<T>>, WireError>
where
    T: WritablePdu<E>,
{
    let mut chunks = Vec::new();
    let mut chunk = Vec::new();
    let mut used = 0;
    for item in items {
        let cost = item.len();
        if cost > room {
            return Err(WireError::Unencodable(format!(
                "the path attributes leave {room} bytes for prefixes, too few for one"
            )));
        }
        if used + cost > room {
            chunks.push(std::mem::take(&mut chunk));
            used = 0;
        }
        used += cost;
        chunk.push(item);
    }
    if !chunk.is_empty() {
        chunks.push(chunk);
    }
    Ok(chunks)
}

fn update(
    withdrawn: Vec<Ipv4UnicastAddress>,
    attributes: Vec<PathAttribute>,
    nlri: Vec<Ipv4UnicastAddress>,
) -> Result<Bytes, WireError> {
    to_bytes(&BgpMessage::Update(BgpUpdateMessage::new(
        withdrawn, attributes, nlri,
    )))
}

fn unreach(value: MpUnreach) -> Result<Bytes, WireError> {
    let attr = attribute(PathAttributeValue::MpUnreach(value))?;
    update(Vec::new(), vec![attr], Vec::new())
}

/// Writes a message with netgauze, refusing what exceeds 4096 bytes and checking that what was
/// written is as long as netgauze said (the header's length field comes from that).
fn to_bytes(message: &BgpMessage) -> Result<Bytes, WireError> {
    let len = message.len();
    if len > MAX_MESSAGE_LEN {
        return Err(WireError::Unencodable(format!(
            "a {len}-byte message is over the {MAX_MESSAGE_LEN}-byte limit"
        )));
    }
    let mut out = Vec::with_capacity(len);
    message
        .write(&mut out)
        .map_err(|e| WireError::Unencodable(e.to_string()))?;
    if out.len() != len {
        return Err(WireError::Unencodable(format!(
            "netgauze wrote {} bytes for a {len}-byte message",
            out.len()
        )));
    }
    Ok(Bytes::from(out))
}

/// A message netgauze has no type for, header and all.
fn raw_message(kind: u8, body: &[u8]) -> Bytes {
    let len = HEADER_LEN + body.len();
    let mut out = BytesMut::with_capacity(len);
    out.put_u128(u128::MAX);
    out.put_u16(len as u16);
    out.put_u8(kind);
    out.put_slice(body);
    out.freeze()
}

/// For the fixed-shape messages whose encoding cannot fail (a few bytes, every shape covered by
/// the tests): should netgauze ever refuse one, say so and send nothing rather than panic.
fn or_nothing(what: &str, encoded: Result<Bytes, WireError>) -> Bytes {
    encoded.unwrap_or_else(|e| {
        tracing::error!(error = %e, "BGP {what} could not be encoded; nothing sent");
        Bytes::new()
    })
}
