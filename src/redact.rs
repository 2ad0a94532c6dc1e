//! Secrets out of connection URLs, in one place: whatever logs or shows a database or Redis
//! URL (the start's error context, `Config`'s `Debug`, storage warnings) passes it through
//! [`url`] first.

/// Query parameters whose values are secrets: libpq's `password` and `sslpassword`, and the
/// usual spellings of passwords and tokens in other URLs.
const SECRET_PARAMS: &[&str] = &[
    "password",
    "pass",
    "passwd",
    "pwd",
    "sslpassword",
    "secret",
    "token",
    "access_token",
    "auth",
    "auth_token",
    "api_key",
    "apikey",
];

/// What replaces a secret.
const MASK: &str = "***";

/// Whether a URL query parameter named `key` carries a secret.
pub fn is_secret_param(key: &str) -> bool {
    let key = key.trim().to_ascii_lowercase();
    SECRET_PARAMS.contains(&key.as_str())
}

/// `url` with the userinfo password and the values of secret query parameters replaced by
/// `***`. A URL that does not parse is not shown at all beyond its scheme: where its parts
/// end cannot be known, so neither can where a password ends.
pub fn url(raw: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(raw) else {
        let scheme = raw.split_once(':').map_or("", |(s, _)| s);
        let scheme = if scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) { scheme } else { "" };
        return format!("{scheme}:[unparseable URL, not shown]");
    };
    let secret_password = parsed.password().is_some();
    let secret_query = parsed.query_pairs().any(|(k, _)| is_secret_param(&k));
    if !secret_password && !secret_query {
        // Nothing to hide: shown exactly as configured.
        return raw.to_owned();
    }
    if secret_password && parsed.set_password(Some(MASK)).is_err() {
        return format!("{}:[URL with a password, not shown]", parsed.scheme());
    }
    if secret_query {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| {
                let v = if is_secret_param(&k) { MASK.to_owned() } else { v.into_owned() };
                (k.into_owned(), v)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hides_userinfo_passwords() {
        assert_eq!(url("postgres://app:hunter2@db/x"), "postgres://app:***@db/x");
        assert_eq!(url("postgres://app:p%40ss%2Fw@db:5432/x"), "postgres://app:***@db:5432/x");
        assert_eq!(url("redis://:hunter2@cache:6379/0"), "redis://:***@cache:6379/0");
    }

    #[test]
    fn hides_secret_query_parameters() {
        assert_eq!(
            url("postgres://app@db/x?sslmode=require&password=hunter2&sslpassword=k3y"),
            "postgres://app@db/x?sslmode=require&password=***&sslpassword=***"
        );
        assert_eq!(url("postgres://app:a@db/x?PASSWORD=b"), "postgres://app:***@db/x?PASSWORD=***");
        assert!(!url("postgres://db/x?password=a%26b%3Dc").contains("a%26b"));
    }

    #[test]
    fn leaves_urls_without_secrets_alone() {
        assert_eq!(url("postgres://app@db/x?sslmode=verify-full"), "postgres://app@db/x?sslmode=verify-full");
        assert_eq!(url("sqlite://data/g.db?mode=rwc"), "sqlite://data/g.db?mode=rwc");
        assert_eq!(url("sqlite://./data dir/g.db"), "sqlite://./data dir/g.db");
        assert_eq!(url("sqlite::memory:"), "sqlite::memory:");
    }

    #[test]
    fn does_not_show_what_does_not_parse() {
        // A raw '/' in the password makes the rest look like a path: show nothing.
        let shown = url("postgres://app:pa/ss@db:x/y");
        assert!(!shown.contains("pa/ss") && !shown.contains("ss@"), "{shown}");
        assert!(shown.starts_with("postgres:"), "{shown}");
    }
}
