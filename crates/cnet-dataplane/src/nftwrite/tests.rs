//! The writer against nft itself, and its parser's subset.

use super::*;

const SCRIPT: &str = r#"add chain inet cnetpol ep_a_in
flush chain inet cnetpol ep_a_in
add counter inet cnetpol acl_a
add rule inet cnetpol ep_a_in meta l4proto 6 ip saddr 10.1.0.0/16 th dport 80 return
add element inet cnetpol in4 { "cnb0" . 10.0.0.2 : jump ep_a_in }
delete element inet cnetpol noicc6 { "cnb0" . fd00::2 }
"#;

#[test]
fn the_commands_of_a_policy_change_parse_and_nothing_else_does() {
    let b = parse(SCRIPT).expect("every line is of a form the writer takes");
    assert_eq!(b.table, "cnetpol");
    assert_eq!(b.commands.len(), 6);
    assert_eq!(b.commands[0], Command::AddChain("ep_a_in".into()));
    let Command::AddElement { key, verdict, .. } = &b.commands[4] else { panic!("{:?}", b.commands[4]) };
    assert_eq!(
        key,
        &[b"cnb0".as_slice(), &[0; 12], &[10, 0, 0, 2]].concat(),
        "ifname NUL-padded to 16, then the address"
    );
    assert_eq!(verdict, &Some(Verdict::Jump("ep_a_in".into())));
    for refused in [
        "table inet cnetpol { }",
        "add set inet cnetpol ips_x_4 { type ipv4_addr; flags interval; }",
        "add element inet cnetpol ips_x_4 { 10.0.0.0/24 }",
        "add rule bridge cnetpol c drop",
        "add rule inet cnetpol c meta l4proto tcp return",
        "add rule inet cnetpol c ip saddr 10.1.2.3/16 return",
        "add rule inet cnetpol c th dport 90-80 return",
        "add rule inet cnetpol c ip saddr fd00::1 return",
        "add rule inet cnetpol c ip saddr 10.0.0.1 ip6 daddr fd00::1 return",
        "add rule inet cnetpol c return drop",
        "add rule inet cnetpol c ct state established accept",
        "add chain inet cnetpol c { type filter hook input priority 0; }",
    ] {
        assert_eq!(parse(refused), None, "{refused}");
        assert_eq!(
            parse(&format!("{SCRIPT}{refused}\n")),
            None,
            "one line out of the subset refuses the script: {refused}"
        );
    }
    assert_eq!(parse("add chain inet a c\nadd chain inet b c"), None, "one table per batch");
    assert_eq!(parse("\n"), None);
}

#[test]
fn rules_are_the_expressions_nft_emits() {
    let exprs = |r: &str| rule(&r.split_whitespace().collect::<Vec<_>>()).unwrap();
    assert_eq!(
        exprs("meta l4proto 6 ip saddr 10.1.0.0/16 ip daddr 10.0.0.0/9 th dport 8000-8080 counter name \"acl_a\" drop"),
        vec![
            Expr::Meta { key: META_L4PROTO },
            cmp(CMP_EQ, &[6]),
            Expr::Meta { key: META_NFPROTO },
            cmp(CMP_EQ, &[NFPROTO_IPV4]),
            Expr::Payload { base: BASE_NETWORK, offset: 12, len: 2 },
            cmp(CMP_EQ, &[10, 1]),
            Expr::Payload { base: BASE_NETWORK, offset: 16, len: 4 },
            Expr::Bitwise { mask: vec![0xff, 0x80, 0, 0] },
            cmp(CMP_EQ, &[10, 0, 0, 0]),
            Expr::Payload { base: BASE_TRANSPORT, offset: 2, len: 2 },
            cmp(CMP_GTE, &8000u16.to_be_bytes()),
            cmp(CMP_LTE, &8080u16.to_be_bytes()),
            Expr::Counter { name: "acl_a".into() },
            Expr::Verdict(Verdict::Drop),
        ]
    );
    assert_eq!(
        exprs("ip6 daddr @ips_n_6 ip6 saddr fd00::9 goto default_in"),
        vec![
            Expr::Meta { key: META_NFPROTO },
            cmp(CMP_EQ, &[NFPROTO_IPV6]),
            Expr::Payload { base: BASE_NETWORK, offset: 24, len: 16 },
            Expr::Lookup { set: "ips_n_6".into() },
            Expr::Payload { base: BASE_NETWORK, offset: 8, len: 16 },
            cmp(CMP_EQ, &"fd00::9".parse::<std::net::Ipv6Addr>().unwrap().octets()),
            Expr::Verdict(Verdict::Goto("default_in".into())),
        ]
    );
    assert_eq!(exprs("return"), vec![Expr::Verdict(Verdict::Return)]);
}

#[test]
fn a_batch_numbers_its_messages_and_acknowledges_the_last() {
    let b = parse(SCRIPT).unwrap();
    let wire = b.encode(100);
    let mut at = 0;
    let mut seen = Vec::new();
    while at < wire.len() {
        let len = u32::from_ne_bytes(wire[at..at + 4].try_into().unwrap()) as usize;
        let kind = u16::from_ne_bytes(wire[at + 4..at + 6].try_into().unwrap());
        let flags = u16::from_ne_bytes(wire[at + 6..at + 8].try_into().unwrap());
        let seq = u32::from_ne_bytes(wire[at + 8..at + 12].try_into().unwrap());
        seen.push((kind, flags & NLM_F_ACK != 0, seq));
        at += len;
    }
    let kinds: Vec<u16> = seen.iter().map(|s| s.0).collect();
    let nft = |m: u8| NFNL_SUBSYS_NFTABLES << 8 | u16::from(m);
    assert_eq!(
        kinds,
        vec![
            0x10,
            nft(NFT_MSG_NEWCHAIN),
            nft(NFT_MSG_DELRULE),
            nft(NFT_MSG_NEWOBJ),
            nft(NFT_MSG_NEWRULE),
            nft(NFT_MSG_NEWSETELEM),
            nft(NFT_MSG_DELSETELEM),
            0x11
        ]
    );
    assert_eq!(seen.iter().map(|s| s.2).collect::<Vec<_>>(), (100..=107).collect::<Vec<_>>());
    assert_eq!(
        seen.iter().filter(|s| s.1).map(|s| s.2).collect::<Vec<_>>(),
        vec![106],
        "only the last command asks for an answer"
    );
}

/// nft's own listing of a table written by this writer equals the one
/// of the same script run through nft.
#[test]
fn nft_lists_what_the_writer_wrote_as_what_nft_writes() {
    let base = r#"table inet cnetpol {
  map in4 { type ifname . ipv4_addr : verdict; }
  map in6 { type ifname . ipv6_addr : verdict; }
  set noicc4 { type ifname . ipv4_addr; }
  set ips_w_4 { type ipv4_addr; flags interval; }
  set ips_w_6 { type ipv6_addr; flags interval; }
  counter acl_old { }
  chain default_in { meta l4proto { tcp, udp, icmp } return; drop; }
  chain ep_old { return; }
}
add element inet cnetpol in4 { "cnb1" . 10.0.0.9 : jump ep_old }
"#;
    let change = r#"add chain inet cnetpol ep_a_in
flush chain inet cnetpol ep_a_in
add chain inet cnetpol ep_a_out
flush chain inet cnetpol ep_a_out
add counter inet cnetpol acl_a
add rule inet cnetpol ep_a_in meta l4proto 1 ip saddr 10.1.0.9/32 counter name "acl_a" drop
add rule inet cnetpol ep_a_in meta l4proto 6 ip saddr 10.1.0.0/16 th dport 80 return
add rule inet cnetpol ep_a_in meta l4proto 17 ip saddr 10.128.0.0/9 th dport 8000-8080 th sport 53 return
add rule inet cnetpol ep_a_in meta l4proto 6 ip saddr @ips_w_4 ip daddr 10.0.0.2 th dport 443 return
add rule inet cnetpol ep_a_in meta l4proto 6 ip6 saddr @ips_w_6 ip6 daddr 2001:db8::/64 return
add rule inet cnetpol ep_a_in meta l4proto 58 ip6 saddr 2001:db8:0:2::/63 return
add rule inet cnetpol ep_a_in ip6 saddr fd00::9 counter name "acl_a" drop
add rule inet cnetpol ep_a_in counter name "acl_a" drop
add rule inet cnetpol ep_a_in goto default_in
add rule inet cnetpol ep_a_out meta l4proto 6 ip daddr 192.0.2.0/24 th dport 1-1023 accept
add rule inet cnetpol ep_a_out jump default_in
add element inet cnetpol in4 { "cnb0" . 10.0.0.2 : jump ep_a_in }
add element inet cnetpol in6 { "cnb0" . fd00::2 : goto ep_a_out }
add element inet cnetpol noicc4 { "cnb0" . 10.0.0.2 }
add element inet cnetpol in4 { "cnb1" . 10.0.0.9 : jump ep_old }
delete element inet cnetpol in4 { "cnb1" . 10.0.0.9 }
add chain inet cnetpol ep_old
flush chain inet cnetpol ep_old
delete chain inet cnetpol ep_old
add counter inet cnetpol acl_old
delete counter inet cnetpol acl_old
"#;
    let listing = |by_writer: bool| {
        crate::testutil::in_private_netns(move || {
            crate::nft::apply(base).unwrap();
            if by_writer {
                parse(change).expect("the change is in the subset").send().unwrap();
            } else {
                crate::nft::apply(change).unwrap();
            }
            // Rules, chains, counters and every set's elements.
            crate::nft::table_json("inet", "cnetpol").unwrap().unwrap().to_string()
        })
    };
    let (Some(written), Some(by_nft)) = (listing(true), listing(false)) else { return };
    assert_eq!(written, by_nft);
    for part in ["ep_a_in", "\"cnb0\"", "acl_a", "fd00::2", "\"range\""] {
        assert!(written.contains(part), "{part} in {written}");
    }
    assert!(!written.contains("ep_old") && !written.contains("10.0.0.9"), "{written}");
}

#[test]
fn a_refused_batch_changes_nothing_and_names_its_line() {
    crate::testutil::in_private_netns(|| {
        crate::nft::apply("table inet t {\n chain c {\n }\n}\n").unwrap();
        let before = crate::nft::table_terse("inet", "t").unwrap();
        let b = parse("add chain inet t d\nadd rule inet t c return\nadd rule inet t missing drop\n").unwrap();
        let err = b.send().unwrap_err().to_string();
        assert!(err.contains("add rule inet t missing drop"), "{err}");
        assert_eq!(crate::nft::table_terse("inet", "t").unwrap(), before, "all or nothing");
        parse("add rule inet t c return").unwrap().send().unwrap();
        assert!(crate::nft::table_terse("inet", "t").unwrap().unwrap().contains("return"));
    });
}
