//! GitHub, which speaks plain OAuth 2.0: the person comes from `/user` and the primary
//! verified email from `/user/emails`.

use secrecy::SecretString;
use serde::Deserialize;

use super::{Identity, ProviderError, get_json};

#[derive(Deserialize)]
struct User {
    id: u64,
    login: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    avatar_url: Option<String>,
}

#[derive(Deserialize)]
struct Email {
    email: String,
    primary: bool,
    verified: bool,
}

/// The GitHub user behind `access_token`.
pub async fn identity(
    http: &reqwest::Client,
    api_url: &str,
    access_token: &SecretString,
) -> Result<Identity, ProviderError> {
    let base = api_url.trim_end_matches('/');
    let user: User = get_json(http, &format!("{base}/user"), Some(access_token)).await?;
    // Without the user:email scope the list is refused; the profile's public email is then
    // all there is, and GitHub does not say it is verified.
    let (email, email_verified) =
        match get_json::<Vec<Email>>(http, &format!("{base}/user/emails"), Some(access_token)).await {
            Ok(emails) => match emails.into_iter().find(|e| e.primary) {
                Some(primary) => (Some(primary.email), primary.verified),
                None => (user.email.clone(), false),
            },
            Err(ProviderError::Unavailable(e)) => {
                tracing::debug!(error = %e, "GitHub emails not readable; using the profile email");
                (user.email.clone(), false)
            }
            Err(e) => return Err(e),
        };
    Ok(Identity {
        subject: user.id.to_string(),
        email: email.filter(|e| !e.is_empty()),
        email_verified,
        name: user.name.filter(|n| !n.trim().is_empty()).or(Some(user.login)),
        picture: user.avatar_url,
    })
}
