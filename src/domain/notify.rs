//! The messages Gatehouse sends: rendered from templates (built in, overridable per
//! deployment) and handed to a mail queue that never makes the caller wait.

use std::{path::Path, sync::Arc};

use chrono::TimeDelta;
use minijinja::{AutoEscape, Environment, context};

/// One rendered message.
#[derive(Clone)]
pub struct Mail {
    /// Recipient address.
    pub to: String,
    /// Subject line.
    pub subject: String,
    /// Plain-text body.
    pub text: String,
    /// HTML body.
    pub html: String,
}

// Bodies can carry single-use tokens: keep them out of debug output.
impl std::fmt::Debug for Mail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mail").field("subject", &self.subject).finish_non_exhaustive()
    }
}

/// Where rendered mail goes; sending happens in the background.
pub trait MailSender: Send + Sync {
    /// Queues a message.
    fn enqueue(&self, mail: Mail);
}

/// The kinds of message, each a `<name>.txt` (first line `Subject: ...`) and `<name>.html`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Template {
    /// Email verification link.
    VerifyEmail,
    /// Link confirming a new address.
    ChangeEmail,
    /// Notice to the old address that a change was requested.
    EmailChangeNotice,
    /// Password reset link.
    ResetPassword,
    /// "Your password was changed".
    PasswordChanged,
    /// "A new sign-in method was linked".
    AccountLinked,
    /// "Someone tried to sign up with your email".
    SignUpAttempt,
    /// "Sign-in methods added before you proved the address were removed".
    AccessRemoved,
    /// "A second factor was added to your account".
    FactorAdded,
    /// "A second factor was removed from your account" (by the owner or an operator).
    FactorRemoved,
    /// "A recovery code was used to sign in".
    RecoveryCodeUsed,
}

impl Template {
    const ALL: [Template; 11] = [
        Self::VerifyEmail,
        Self::ChangeEmail,
        Self::EmailChangeNotice,
        Self::ResetPassword,
        Self::PasswordChanged,
        Self::AccountLinked,
        Self::SignUpAttempt,
        Self::AccessRemoved,
        Self::FactorAdded,
        Self::FactorRemoved,
        Self::RecoveryCodeUsed,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::VerifyEmail => "verify_email",
            Self::ChangeEmail => "change_email",
            Self::EmailChangeNotice => "email_change_notice",
            Self::ResetPassword => "reset_password",
            Self::PasswordChanged => "password_changed",
            Self::AccountLinked => "account_linked",
            Self::SignUpAttempt => "sign_up_attempt",
            Self::AccessRemoved => "access_removed",
            Self::FactorAdded => "factor_added",
            Self::FactorRemoved => "factor_removed",
            Self::RecoveryCodeUsed => "recovery_code_used",
        }
    }

    fn builtin(self, html: bool) -> &'static str {
        macro_rules! pair {
            ($name:literal) => {
                if html {
                    include_str!(concat!("../../templates/mail/", $name, ".html"))
                } else {
                    include_str!(concat!("../../templates/mail/", $name, ".txt"))
                }
            };
        }
        match self {
            Self::VerifyEmail => pair!("verify_email"),
            Self::ChangeEmail => pair!("change_email"),
            Self::EmailChangeNotice => pair!("email_change_notice"),
            Self::ResetPassword => pair!("reset_password"),
            Self::PasswordChanged => pair!("password_changed"),
            Self::AccountLinked => pair!("account_linked"),
            Self::SignUpAttempt => pair!("sign_up_attempt"),
            Self::AccessRemoved => pair!("access_removed"),
            Self::FactorAdded => pair!("factor_added"),
            Self::FactorRemoved => pair!("factor_removed"),
            Self::RecoveryCodeUsed => pair!("recovery_code_used"),
        }
    }
}

/// Renders and queues messages.
pub struct Notifier {
    templates: Environment<'static>,
    sender: Arc<dyn MailSender>,
    frontend_url: String,
}

/// What a template may use.
#[derive(Debug, Default)]
pub struct Vars<'a> {
    /// Recipient's name.
    pub name: &'a str,
    /// The address concerned.
    pub email: &'a str,
    /// A token for the link, when the message carries one.
    pub token: Option<&'a str>,
    /// How long the link works.
    pub expires_in: Option<TimeDelta>,
    /// The new address (email change notice).
    pub new_email: Option<&'a str>,
    /// The provider name (account linked).
    pub provider: Option<&'a str>,
    /// Providers whose links were removed (access removed).
    pub removed: &'a [String],
    /// A sentence about what changed (second-factor notices); never a secret.
    pub detail: Option<&'a str>,
}

impl Notifier {
    /// Loads the built-in templates, replaced by any same-named file in `overrides`.
    pub fn new(sender: Arc<dyn MailSender>, frontend_url: &str, overrides: Option<&Path>) -> anyhow::Result<Self> {
        let mut env = Environment::new();
        // HTML bodies escape every value (names are user input); text bodies don't.
        env.set_auto_escape_callback(|name| if name.ends_with(".html") { AutoEscape::Html } else { AutoEscape::None });
        for template in Template::ALL {
            for html in [false, true] {
                let file = format!("{}.{}", template.name(), if html { "html" } else { "txt" });
                let source = match overrides.map(|dir| dir.join(&file)).filter(|p| p.exists()) {
                    Some(path) => std::fs::read_to_string(&path)
                        .map_err(|e| anyhow::anyhow!("reading mail template {}: {e}", path.display()))?,
                    None => template.builtin(html).to_owned(),
                };
                env.add_template_owned(file, source)?;
            }
        }
        Ok(Self { templates: env, sender, frontend_url: frontend_url.trim_end_matches('/').to_owned() })
    }

    /// Renders `template` for `to` and queues it. A template error is logged, not returned:
    /// the caller's answer must not depend on mail.
    pub fn send(&self, template: Template, to: &str, vars: Vars<'_>) {
        match self.render(template, to, &vars) {
            Ok(mail) => self.sender.enqueue(mail),
            Err(error) => tracing::error!(template = template.name(), %error, "rendering mail failed"),
        }
    }

    fn render(&self, template: Template, to: &str, vars: &Vars<'_>) -> Result<Mail, minijinja::Error> {
        let link = vars.token.map(|token| {
            let path = match template {
                Template::ResetPassword | Template::SignUpAttempt => "reset-password",
                _ => "verify-email",
            };
            format!("{}/{path}?token={token}", self.frontend_url)
        });
        // The sign-up attempt message links to the reset page without a token.
        let link = link
            .or_else(|| (template == Template::SignUpAttempt).then(|| format!("{}/reset-password", self.frontend_url)));
        let ctx = context! {
            name => vars.name,
            email => vars.email,
            link => link,
            expires_in => vars.expires_in.map(human),
            new_email => vars.new_email,
            provider => vars.provider,
            removed => vars.removed,
            detail => vars.detail,
        };
        let text = self.templates.get_template(&format!("{}.txt", template.name()))?.render(&ctx)?;
        let html = self.templates.get_template(&format!("{}.html", template.name()))?.render(&ctx)?;
        let (subject, body) = match text.split_once('\n') {
            Some((first, rest)) if first.starts_with("Subject:") => {
                (first.trim_start_matches("Subject:").trim().to_owned(), rest.trim_start().to_owned())
            }
            _ => ("Message from Gatehouse".to_owned(), text),
        };
        Ok(Mail { to: to.to_owned(), subject, text: body, html })
    }
}

fn human(d: TimeDelta) -> String {
    let hours = d.num_hours();
    if hours >= 48 && hours % 24 == 0 {
        format!("{} days", hours / 24)
    } else if hours >= 1 {
        format!("{hours} hour{}", if hours == 1 { "" } else { "s" })
    } else {
        format!("{} minutes", d.num_minutes().max(1))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    struct Capture(Mutex<Vec<Mail>>);

    impl MailSender for Capture {
        fn enqueue(&self, mail: Mail) {
            self.0.lock().unwrap().push(mail);
        }
    }

    #[test]
    fn renders_links_and_escapes_html() {
        let capture = Arc::new(Capture::default());
        let notifier = Notifier::new(capture.clone(), "https://book.example/", None).unwrap();
        let vars = Vars {
            name: "<script>x</script>",
            email: "a@example.com",
            token: Some("tok"),
            expires_in: Some(TimeDelta::hours(1)),
            ..Default::default()
        };
        notifier.send(Template::ResetPassword, "a@example.com", vars);
        let mail = capture.0.lock().unwrap().pop().unwrap();
        assert_eq!(mail.subject, "Reset your password");
        assert!(mail.text.contains("https://book.example/reset-password?token=tok"));
        assert!(mail.text.contains("1 hour"));
        assert!(!mail.html.contains("<script>"));
        assert!(mail.html.contains("&lt;script&gt;"));
    }
}
