//! docker-style human output: durations, sizes, statuses, tables.

use chrono::{DateTime, Utc};
use shoal_api::v1::ContainerState;
use shoal_api::ContainerStatus;

/// docker's units.HumanDuration.
pub fn human_duration(secs: i64) -> String {
    let s = secs.max(0);
    let plural = |n: i64, unit: &str| {
        if n == 1 {
            format!("1 {unit}")
        } else {
            format!("{n} {unit}s")
        }
    };
    match s {
        0 => "Less than a second".into(),
        1..=59 => plural(s, "second"),
        60..=119 => "About a minute".into(),
        120..=3599 => plural(s / 60, "minute"),
        3600..=7199 => "About an hour".into(),
        7200..=172_799 => plural(s / 3600, "hour"),
        172_800..=1_209_599 => plural(s / 86_400, "day"),
        1_209_600..=5_183_999 => plural(s / 604_800, "week"),
        5_184_000..=63_071_999 => plural(s / 2_592_000, "month"),
        _ => plural(s / 31_536_000, "year"),
    }
}

pub fn since(time: &str) -> Option<i64> {
    let t: DateTime<Utc> = time.parse().ok()?;
    Some((Utc::now() - t).num_seconds())
}

pub fn ago(time: &str) -> String {
    since(time)
        .map(|s| format!("{} ago", human_duration(s)))
        .unwrap_or_default()
}

/// The STATUS column of `shoal ps`, with the health as docker shows it.
pub fn status_text(st: &ContainerState) -> String {
    let base = base_status(st);
    match (st.status(), st.health.as_ref().map(|h| h.status.as_str())) {
        (ContainerStatus::Running, Some("starting")) => format!("{base} (health: starting)"),
        (ContainerStatus::Running, Some(h)) if !h.is_empty() => format!("{base} ({h})"),
        _ => base,
    }
}

fn base_status(st: &ContainerState) -> String {
    match st.status() {
        ContainerStatus::Running => format!(
            "Up {}",
            since(&st.started_at)
                .map(human_duration)
                .unwrap_or_default()
        ),
        ContainerStatus::Paused => format!(
            "Up {} (Paused)",
            since(&st.started_at)
                .map(human_duration)
                .unwrap_or_default()
        ),
        ContainerStatus::Restarting => {
            format!("Restarting ({}) {}", st.exit_code, ago(&st.finished_at))
        }
        ContainerStatus::Exited => format!("Exited ({}) {}", st.exit_code, ago(&st.finished_at)),
        ContainerStatus::Created => "Created".into(),
        ContainerStatus::Removing => "Removal In Progress".into(),
        ContainerStatus::Dead => "Dead".into(),
        ContainerStatus::Unspecified => "Unknown".into(),
    }
}

/// docker's HumanSize: decimal units, 3 significant digits.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1000.0 && i < UNITS.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        return format!("{bytes}B");
    }
    let digits = if v >= 100.0 {
        0
    } else if v >= 10.0 {
        1
    } else {
        2
    };
    let s = format!("{v:.digits$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s.as_str()
    };
    format!("{s}{}", UNITS[i])
}

/// A left-aligned table with docker's 3-space column gaps.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let n = cells.len();
        for (i, c) in cells.into_iter().enumerate() {
            out.push_str(c);
            if i + 1 < n {
                out.push_str(&" ".repeat(widths[i] - c.chars().count() + 3));
            }
        }
        out.push('\n');
    };
    line(header.to_vec(), &mut out);
    for r in rows {
        line(r.iter().map(String::as_str).collect(), &mut out);
    }
    out
}

/// Commands whose only output is JSON accept `--format json` for scripts' sake.
pub fn json_only(format: Option<&str>) -> anyhow::Result<()> {
    match format {
        None | Some("json") | Some("{{json .}}") => Ok(()),
        Some(other) => anyhow::bail!(
            "unsupported --format {other:?}: this command prints JSON; use --format json"
        ),
    }
}

/// Shorten to `n` characters with an ellipsis, as docker does for COMMAND.
pub fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}

pub fn short_id(id: &str) -> String {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    id.chars().take(12).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_like_docker() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(1), "1 second");
        assert_eq!(human_duration(45), "45 seconds");
        assert_eq!(human_duration(90), "About a minute");
        assert_eq!(human_duration(600), "10 minutes");
        assert_eq!(human_duration(3 * 3600), "3 hours");
        assert_eq!(human_duration(3 * 86_400), "3 days");
    }

    #[test]
    fn sizes_like_docker() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1_240), "1.24kB");
        assert_eq!(human_size(4_260_000), "4.26MB");
        assert_eq!(human_size(12_300_000), "12.3MB");
        assert_eq!(human_size(123_000_000), "123MB");
    }

    #[test]
    fn tables_align() {
        let t = table(&["A", "BB"], &[vec!["xyz".into(), "1".into()]]);
        assert_eq!(t, "A     BB\nxyz   1\n");
        assert_eq!(truncate("abcdef", 4), "abc…");
    }
}
