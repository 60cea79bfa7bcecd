//! Terminal output: aligned tables, human ages and sizes; JSON for scripts.

use chrono::TimeDelta;
use serde::Serialize;

/// Print `value` as pretty JSON on stdout.
pub fn json<T: Serialize + ?Sized>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("cannot render JSON: {e}"),
    }
}

/// `3s`, `4m 12s`, `2h 5m`, `3d 4h`; `-` for none.
pub fn age(d: Option<TimeDelta>) -> String {
    let Some(d) = d else { return "-".into() };
    let s = d.num_seconds().max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

/// `512 B`, `1.5 KiB`, `3.2 MiB`.
pub fn size(bytes: usize) -> String {
    const K: f64 = 1024.0;
    let b = bytes as f64;
    if b < K {
        format!("{bytes} B")
    } else if b < K * K {
        format!("{:.1} KiB", b / K)
    } else {
        format!("{:.1} MiB", b / K / K)
    }
}

/// Columns padded to their widest cell; numbers (cells that parse as one) right-aligned.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            let w = widths.get(i).copied().unwrap_or(0);
            let pad = w.saturating_sub(c.chars().count());
            if i > 0 {
                out.push_str("  ");
            }
            if c.parse::<f64>().is_ok() {
                out.push_str(&" ".repeat(pad));
                out.push_str(c);
            } else {
                out.push_str(c);
                if i + 1 < cells.len() {
                    out.push_str(&" ".repeat(pad));
                }
            }
        }
        out.trim_end().to_owned()
    };
    let mut out = line(header.to_vec());
    out.push('\n');
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_sizes_and_alignment() {
        assert_eq!(age(None), "-");
        assert_eq!(age(Some(TimeDelta::seconds(59))), "59s");
        assert_eq!(age(Some(TimeDelta::seconds(252))), "4m 12s");
        assert_eq!(age(Some(TimeDelta::seconds(7500))), "2h 5m");
        assert_eq!(age(Some(TimeDelta::seconds(273600))), "3d 4h");
        assert_eq!(size(512), "512 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(3 * 1024 * 1024), "3.0 MiB");
        let t = table(
            &["table", "pending"],
            &[
                vec!["outbox".into(), "5".into()],
                vec!["in".into(), "120".into()],
            ],
        );
        assert_eq!(t, "table   pending\noutbox        5\nin          120\n");
    }
}
