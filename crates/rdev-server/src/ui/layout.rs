//! The page shell every UI page shares (head, top bar with navigation and logout, main) and
//! the small pieces pages repeat: status badges, times, durations, money and token counts.
//! All HTML goes through maud, which escapes every interpolated value.
//!
//! It must not read the store or check permissions beyond what the caller passes in.

use axum::response::Html;
use chrono::{DateTime, Utc};
use maud::{html, Markup, DOCTYPE};
use rdev_core::{Action, TaskStatus};

use super::session::Viewer;

/// Which top-level section a page belongs to (marked in the navigation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Builds,
    NewBuild,
    Projects,
}

/// A whole page: `title` goes into `<title>`; `body` starts with the page's `<h1>`.
pub fn page(
    title: &str,
    viewer: Option<&Viewer>,
    current: Option<Section>,
    body: Markup,
) -> Html<String> {
    let nav_item = |section: Section, href: &str, label: &str| {
        html! {
            li { a href=(href) aria-current=[(current == Some(section)).then_some("page")] { (label) } }
        }
    };
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · rdev" }
                link rel="stylesheet" href="/ui/assets/ui.css";
                script src="/ui/assets/htmx-2.0.11.min.js" defer {}
                script src="/ui/assets/htmx-ext-sse-2.2.4.min.js" defer {}
            }
            body {
                header.top {
                    a.brand href="/ui/builds" { "rdev" }
                    @if let Some(v) = viewer {
                        nav aria-label="Main" {
                            ul {
                                (nav_item(Section::Builds, "/ui/builds", "Builds"))
                                @if v.can(Action::Build, None) {
                                    (nav_item(Section::NewBuild, "/ui/builds/new", "New build"))
                                }
                                (nav_item(Section::Projects, "/ui/projects", "Projects"))
                            }
                        }
                        div.who {
                            span { (v.grant.token) " · " (v.grant.scope.as_str()) }
                            @if v.logged_in {
                                form method="post" action="/ui/logout" {
                                    button.secondary type="submit" { "Log out" }
                                }
                            }
                        }
                    }
                }
                main { (body) }
            }
        }
    };
    Html(markup.into_string())
}

/// A status as a coloured badge.
pub fn status(s: TaskStatus) -> Markup {
    html! { span class=(format!("badge s-{}", s.as_str())) { (s.as_str()) } }
}

/// A time as `YYYY-MM-DD HH:MM:SS` UTC, machine-readable in `<time>`.
pub fn time(at: DateTime<Utc>) -> Markup {
    html! { time datetime=(at.to_rfc3339()) { (at.format("%Y-%m-%d %H:%M:%S")) } }
}

/// A time of day only (same-day timelines).
pub fn clock(at: DateTime<Utc>) -> Markup {
    html! { time datetime=(at.to_rfc3339()) { (at.format("%H:%M:%S")) } }
}

/// A duration in milliseconds, short: `850 ms`, `12.3 s`, `4 min 05 s`, `2 h 03 min`.
pub fn duration_ms(ms: i64) -> String {
    let ms = ms.max(0);
    match ms {
        0..=999 => format!("{ms} ms"),
        1_000..=59_999 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..=3_599_999 => format!("{} min {:02} s", ms / 60_000, (ms / 1000) % 60),
        _ => format!("{} h {:02} min", ms / 3_600_000, (ms / 60_000) % 60),
    }
}

/// The time between two instants, short.
pub fn between(from: DateTime<Utc>, to: DateTime<Utc>) -> String {
    duration_ms((to - from).num_milliseconds())
}

/// Dollars with cents (and a tenth of a cent below one dollar).
pub fn usd(v: f64) -> String {
    if v < 1.0 {
        format!("${v:.3}")
    } else {
        format!("${v:.2}")
    }
}

/// A token count with thousands separators.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The first 8 characters of an id or hash, with the whole as a tooltip.
pub fn short(id: &str) -> Markup {
    html! { code title=(id) { (id.chars().take(8).collect::<String>()) } }
}

/// A message box at the top of a page.
pub fn notice(text: &str, bad: bool) -> Markup {
    html! { div class=(if bad { "notice bad" } else { "notice" }) role=(if bad { "alert" } else { "status" }) { (text) } }
}

/// An error page body: a heading and the reason.
pub fn error_page(viewer: Option<&Viewer>, title: &str, reason: &str) -> Html<String> {
    page(
        title,
        viewer,
        None,
        html! {
            h1 { (title) }
            (notice(reason, true))
            p { a href="/ui/builds" { "Back to the builds" } }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_read_well() {
        assert_eq!(duration_ms(850), "850 ms");
        assert_eq!(duration_ms(12_340), "12.3 s");
        assert_eq!(duration_ms(245_000), "4 min 05 s");
        assert_eq!(duration_ms(7_380_000), "2 h 03 min");
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(count(999), "999");
        assert_eq!(usd(0.0123), "$0.012");
        assert_eq!(usd(12.5), "$12.50");
    }

    #[test]
    fn interpolated_text_is_escaped() {
        let html = notice("<script>alert(1)</script>", true).into_string();
        assert!(html.contains("&lt;script&gt;"), "{html}");
        assert!(!html.contains("<script>"), "{html}");
    }
}
