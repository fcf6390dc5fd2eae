//! nftables transactions: one `nft -f -` per change, atomic.

use crate::cmd::Cmd;
use crate::{DataplaneError, Result};

/// Applies a script as one atomic transaction.
pub fn apply(script: &str) -> Result<()> {
    Cmd::new("nft").args(["-f", "-"]).stdin(script.to_string()).run().map(|_| ())
}

/// The JSON dump of one table, or `None` when it does not exist.
pub fn table_json(family: &str, name: &str) -> Result<Option<serde_json::Value>> {
    match Cmd::new("nft").args(["-j", "list", "table", family, name]).run() {
        Ok(out) => serde_json::from_str(&out)
            .map(Some)
            .map_err(|e| DataplaneError::Parse { program: "nft".into(), detail: e.to_string() }),
        Err(DataplaneError::Failed { stderr, .. }) if stderr.contains("No such file") => Ok(None),
        Err(e) => Err(e),
    }
}

/// All base chains of the ruleset with `policy drop`, as `family table chain hook`.
pub fn foreign_drop_chains(own_table: &str) -> Result<Vec<String>> {
    let out = Cmd::new("nft").args(["-j", "list", "chains"]).run()?;
    let v: serde_json::Value = serde_json::from_str(&out)
        .map_err(|e| DataplaneError::Parse { program: "nft".into(), detail: e.to_string() })?;
    let mut found = Vec::new();
    for item in v["nftables"].as_array().into_iter().flatten() {
        let c = &item["chain"];
        if c.is_null() || c["table"] == own_table || c["policy"] != "drop" {
            continue;
        }
        found.push(format!(
            "{} {} {} (hook {})",
            c["family"].as_str().unwrap_or("?"),
            c["table"].as_str().unwrap_or("?"),
            c["name"].as_str().unwrap_or("?"),
            c["hook"].as_str().unwrap_or("?")
        ));
    }
    Ok(found)
}
