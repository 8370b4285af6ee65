//! Output helpers: aligned tables, pretty JSON, and lenient decoding of the daemon's results.

use serde::de::DeserializeOwned;
use serde_json::Value;

/// Spaces between two columns.
const GAP: usize = 3;

/// Formats `rows` under `header` in left-aligned columns as wide as their widest cell, like
/// `docker network ls`. An empty `header` prints no header line. Every line ends in `\n`;
/// trailing spaces are trimmed.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let header: Vec<String> = header.iter().map(ToString::to_string).collect();
    let lines: Vec<&[String]> = std::iter::once(header.as_slice())
        .filter(|h| !h.is_empty())
        .chain(rows.iter().map(Vec::as_slice))
        .collect();
    let columns = lines.iter().map(|l| l.len()).max().unwrap_or(0);
    let mut widths = vec![0; columns];
    for line in &lines {
        for (width, cell) in widths.iter_mut().zip(line.iter()) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for line in &lines {
        let mut text = String::new();
        for (cell, width) in line.iter().zip(&widths) {
            text.push_str(cell);
            let pad = width - cell.chars().count() + GAP;
            text.push_str(&" ".repeat(pad));
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    out
}

/// `value` as pretty JSON with a final newline.
pub fn json(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    text.push('\n');
    text
}

/// Decodes a list of `T` (or a single `T`, as a list of one); `None` if the shape is not that,
/// so the caller can print the JSON instead of failing.
pub fn rows<T: DeserializeOwned>(value: &Value) -> Option<Vec<T>> {
    match value {
        Value::Array(_) => serde_json::from_value(value.clone()).ok(),
        Value::Object(_) => serde_json::from_value(value.clone())
            .ok()
            .map(|row| vec![row]),
        _ => None,
    }
}

/// Renders a list of `T` with `render`, or falls back to the JSON when it is not one.
pub fn rows_or_json<T: DeserializeOwned>(
    value: &Value,
    render: impl FnOnce(&[T]) -> String,
) -> String {
    match rows::<T>(value) {
        Some(rows) => render(&rows),
        None => json(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cells(row: &[&str]) -> Vec<String> {
        row.iter().map(|c| c.to_string()).collect()
    }

    #[test]
    fn columns_are_aligned() {
        let text = table(
            &["NAME", "TYPE", "MTU"],
            &[
                cells(&["veth-long-name", "system", "1500"]),
                cells(&["t", "tap", "65535"]),
            ],
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "NAME             TYPE     MTU",
                "veth-long-name   system   1500",
                "t                tap      65535",
            ]
        );
        // Every column starts at the same offset on every line.
        for column in ["TYPE", "MTU"] {
            let at = lines[0].find(column).unwrap();
            for line in &lines[1..] {
                assert!(
                    line[..at].ends_with(' ') && !line[at..].starts_with(' '),
                    "{line}"
                );
            }
        }
    }

    #[test]
    fn table_edges() {
        assert_eq!(table(&["A", "B"], &[]), "A   B\n");
        assert_eq!(table(&[], &[]), "");
        assert_eq!(
            table(&[], &[cells(&["k", "1"]), cells(&["key", "22"])]),
            "k     1\nkey   22\n"
        );
        // Empty trailing cells leave no trailing spaces; width counts characters, not bytes.
        assert_eq!(
            table(&["X", "Y"], &[cells(&["é", ""]), cells(&["ab", "z"])]),
            "X    Y\né\nab   z\n"
        );
    }

    #[test]
    fn lenient_rows() {
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct Row {
            a: u32,
        }
        assert_eq!(
            rows::<Row>(&json!([{"a": 1}, {"a": 2}])),
            Some(vec![Row { a: 1 }, Row { a: 2 }])
        );
        assert_eq!(rows::<Row>(&json!({"a": 1})), Some(vec![Row { a: 1 }]));
        assert_eq!(rows::<Row>(&json!([{"b": 1}])), None);
        assert_eq!(rows::<Row>(&json!("text")), None);
        assert_eq!(rows_or_json::<Row>(&json!(7), |_| unreachable!()), "7\n");
    }
}
