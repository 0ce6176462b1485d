//! `X-Robots-Tag` opt-out.
//!
//! A header value is a comma-separated list of directives, optionally scoped to one user
//! agent by a leading `agent:` (`X-Robots-Tag: otherbot: noindex` does not apply to prep;
//! `X-Robots-Tag: prep: noai` and `X-Robots-Tag: noai` do). Several header lines may be
//! present. Directives that carry their own `name: value` (e.g. `unavailable_after`) are
//! not mistaken for agents.

pub const DEFAULT_DIRECTIVES: [&str; 4] = ["noai", "noimageai", "noindex", "noimageindex"];

const VALUED: [&str; 4] = [
    "unavailable_after",
    "max-snippet",
    "max-image-preview",
    "max-video-preview",
];

/// The first opting-out directive that applies to `agent`, if any.
pub fn opted_out(values: &[&str], agent: &str, directives: &[String]) -> Option<String> {
    for value in values {
        let (scope, rest) = match value.split_once(':') {
            Some((head, tail)) => {
                let head = head.trim().to_ascii_lowercase();
                if !head.is_empty()
                    && !head.contains(',')
                    && !head.contains(' ')
                    && !VALUED.contains(&head.as_str())
                {
                    (Some(head), tail)
                } else {
                    (None, *value)
                }
            }
            None => (None, *value),
        };
        if let Some(scope) = &scope {
            if scope != &agent.to_ascii_lowercase() {
                continue;
            }
        }
        for d in rest.split(',') {
            let d = d.trim().to_ascii_lowercase();
            if directives.iter().any(|x| x.eq_ignore_ascii_case(&d)) {
                return Some(match &scope {
                    Some(s) => format!("{s}: {d}"),
                    None => d,
                });
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Vec<String> {
        DEFAULT_DIRECTIVES.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn directives_and_scopes() {
        let d = defaults();
        assert_eq!(opted_out(&["noai"], "prep", &d).as_deref(), Some("noai"));
        assert_eq!(
            opted_out(&["nofollow, NoImageAI"], "prep", &d).as_deref(),
            Some("noimageai")
        );
        assert_eq!(
            opted_out(&["prep: noai"], "prep", &d).as_deref(),
            Some("prep: noai")
        );
        assert_eq!(opted_out(&["googlebot: noindex"], "prep", &d), None);
        assert_eq!(
            opted_out(&["googlebot: noindex", "noimageindex"], "prep", &d).as_deref(),
            Some("noimageindex")
        );
        assert_eq!(
            opted_out(&["unavailable_after: 25 Jun 2010 15:00:00 PST"], "prep", &d),
            None
        );
        assert_eq!(opted_out(&["nofollow", "noarchive"], "prep", &d), None);
        assert_eq!(opted_out(&["noindex"], "prep", &["noai".to_string()]), None);
        assert_eq!(opted_out(&["noai"], "prep", &[]), None);
    }
}
