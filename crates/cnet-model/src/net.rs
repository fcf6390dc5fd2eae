//! Small network value types: MAC addresses and transport protocols.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;
use utoipa::ToSchema;

use crate::error::ApiError;

/// A unicast Ethernet address. Accepts `0a:58:..` and the Windows form
/// `0A-58-..`; always written with colons, lower case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, ToSchema)]
#[schema(value_type = String, example = "0a:58:0a:4f:00:02", pattern = "^(?!00:00:00:00:00:00)[0-9A-Fa-f][02468ACEace](:[0-9A-Fa-f]{2}){5}$")]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    pub fn is_unicast(&self) -> bool {
        self.0[0] & 1 == 0 && self.0 != [0; 6]
    }
    pub fn to_u64(self) -> u64 {
        self.0.iter().fold(0u64, |acc, b| (acc << 8) | *b as u64)
    }
    pub fn from_u64(v: u64) -> Self {
        let b = v.to_be_bytes();
        MacAddr([b[2], b[3], b[4], b[5], b[6], b[7]])
    }
}

impl FromStr for MacAddr {
    type Err = ApiError;
    fn from_str(s: &str) -> Result<Self, ApiError> {
        let err = || {
            ApiError::invalid_param(format!(
                "MAC address {s:?} is invalid: write six hex bytes such as 0a:58:0a:00:00:02"
            ))
        };
        let parts: Vec<&str> = s.split([':', '-']).collect();
        if parts.len() != 6 {
            return Err(err());
        }
        let mut out = [0u8; 6];
        for (i, p) in parts.iter().enumerate() {
            if p.len() != 2 {
                return Err(err());
            }
            out[i] = u8::from_str_radix(p, 16).map_err(|_| err())?;
        }
        let mac = MacAddr(out);
        if !mac.is_unicast() {
            return Err(ApiError::invalid_param(format!(
                "MAC address {s} is not a unicast address: the lowest bit of the first byte must be 0"
            )));
        }
        Ok(mac)
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3], b[4], b[5])
    }
}

impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}
impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(|e: ApiError| serde::de::Error::custom(e))
    }
}

/// A transport protocol of a port mapping. On the wire a number as in HCN
/// (6, 17, 132); names (`"tcp"`, `"udp"`, `"sctp"`) are accepted too.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
    fn from_number(n: u64) -> Option<Self> {
        match n {
            6 => Some(Protocol::Tcp),
            17 => Some(Protocol::Udp),
            132 => Some(Protocol::Sctp),
            _ => None,
        }
    }
}

impl FromStr for Protocol {
    type Err = ApiError;
    fn from_str(s: &str) -> Result<Self, ApiError> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" | "6" => Ok(Protocol::Tcp),
            "udp" | "17" => Ok(Protocol::Udp),
            "sctp" | "132" => Ok(Protocol::Sctp),
            _ => Err(ApiError::invalid_param(format!(
                "protocol {s:?} is not supported: use tcp (6), udp (17) or sctp (132)"
            ))),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for Protocol {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(self.number())
    }
}
impl<'de> Deserialize<'de> for Protocol {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::Number(n) => n.as_u64().and_then(Protocol::from_number).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "InvalidParameter: protocol {n} is not supported: use 6 (TCP), 17 (UDP) or 132 (SCTP)"
                ))
            }),
            serde_json::Value::String(s) => s.parse().map_err(|e: ApiError| serde::de::Error::custom(e)),
            other => Err(serde::de::Error::custom(format!("protocol must be a number or a name, not {other}"))),
        }
    }
}

/// An address or a prefix (`10.0.0.7` is `10.0.0.7/32`), with the host
/// bits cleared; `None` when it is neither.
pub fn parse_prefix(s: &str) -> Option<ipnet::IpNet> {
    match s.parse::<ipnet::IpNet>() {
        Ok(n) => Some(n.trunc()),
        Err(_) => s.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from),
    }
}

/// An IPv4 or IPv6 address, as the API's schema states it.
pub struct IpAddress;

impl utoipa::PartialSchema for IpAddress {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, OneOfBuilder, SchemaFormat, Type};
        let family = |f| ObjectBuilder::new().schema_type(Type::String).format(Some(SchemaFormat::KnownFormat(f)));
        OneOfBuilder::new().item(family(KnownFormat::Ipv4)).item(family(KnownFormat::Ipv6)).into()
    }
}
impl utoipa::ToSchema for IpAddress {}

/// A port mapping's protocol in the API's schema: 6 (TCP), 17 (UDP) or 132 (SCTP).
pub fn protocol_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .enum_values(Some([6, 17, 132]))
        .description(Some("6 (TCP), 17 (UDP) or 132 (SCTP); the names TCP, UDP, SCTP are accepted too."))
        .build()
}

/// A string of `pattern` in the API's schema.
fn pattern(p: &str, example: &str) -> utoipa::openapi::schema::ObjectBuilder {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new().schema_type(Type::String).pattern(Some(p)).examples([example])
}

/// An address prefix (`10.79.0.0/24`, `fd00:79::/64`) as the API's
/// schema states it; a subnet must also have its host bits clear.
pub struct IpPrefix;

impl utoipa::PartialSchema for IpPrefix {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        const OCTET: &str = "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])";
        let v4 = format!("^({OCTET}\\.){{3}}{OCTET}/(3[0-2]|[12]?[0-9])$");
        // Full, or compressed with "::" (at most 7 groups around it, so every
        // string of the pattern is an address).
        const G: &str = "[0-9a-f]{1,4}";
        let v6 = format!(
            "^(({G}:){{7}}{G}|({G}:){{1,7}}:|:(:{G}){{1,7}}|({G}:){{1,3}}(:{G}){{1,3}}|::)/(12[0-8]|1[01][0-9]|[1-9]?[0-9])$"
        );
        utoipa::openapi::schema::OneOfBuilder::new()
            .item(pattern(&v4, "10.79.0.0/24"))
            .item(pattern(&v6, "fd00:79::/64"))
            .into()
    }
}
impl utoipa::ToSchema for IpPrefix {}

/// A unicast MAC address other than zero (`0a:58:0a:4f:00:02`) as the API's schema states it.
pub struct MacAddress;

impl utoipa::PartialSchema for MacAddress {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        pattern("^(?!00:00:00:00:00:00)[0-9A-Fa-f][02468ACEace](:[0-9A-Fa-f]{2}){5}$", "0a:58:0a:4f:00:02").into()
    }
}
impl utoipa::ToSchema for MacAddress {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_accepts_windows_and_linux_forms() {
        let a: MacAddr = "0A-58-0a-00-00-02".parse().unwrap();
        let b: MacAddr = "0a:58:0a:00:00:02".parse().unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "0a:58:0a:00:00:02");
        assert!("01:00:00:00:00:01".parse::<MacAddr>().is_err());
        assert!("0a:58:0a".parse::<MacAddr>().is_err());
        assert_eq!(MacAddr::from_u64(a.to_u64()), a);
    }

    #[test]
    fn protocol_accepts_numbers_and_names() {
        let p: Protocol = serde_json::from_str("17").unwrap();
        assert_eq!(p, Protocol::Udp);
        let p: Protocol = serde_json::from_str("\"TCP\"").unwrap();
        assert_eq!(p, Protocol::Tcp);
        assert!(serde_json::from_str::<Protocol>("1").is_err());
        assert_eq!(serde_json::to_string(&Protocol::Sctp).unwrap(), "132");
    }
}
