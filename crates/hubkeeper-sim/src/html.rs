//! The consent and error pages: plain HTML forms, so a developer can click through an install in
//! any browser and an integration test can drive it with nothing but an HTTP client.

use std::fmt::Write;

use crate::config::{AccountSpec, AppSpec};

pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;background:#f5f8fa;color:#33475b;margin:0}\
main{max-width:40rem;margin:3rem auto;background:#fff;border:1px solid #cbd6e2;border-radius:6px;padding:2rem}\
h1{font-size:1.4rem}.sim{font-size:.8rem;color:#7c98b6}fieldset{border:1px solid #cbd6e2;margin:1rem 0}\
label{display:block;margin:.4rem 0}button{font-size:1rem;padding:.5rem 1.2rem;margin-right:.5rem;border-radius:3px;border:1px solid #ff7a59}\
.approve{background:#ff7a59;color:#fff}.deny{background:#fff;color:#ff7a59}code{background:#eaf0f6;padding:0 .2rem}";

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\
         <style>{STYLE}</style></head><body><main>{body}\
         <p class=\"sim\">Hubkeeper HubSpot simulator</p></main></body></html>\n",
        escape(title)
    )
}

pub(crate) struct ConsentView<'a> {
    pub(crate) app: &'a AppSpec,
    pub(crate) redirect_uri: &'a str,
    pub(crate) required: &'a [String],
    pub(crate) optional: &'a [String],
    /// The raw `optional_scope` parameter, echoed so the decision re-validates the same request.
    pub(crate) optional_raw: &'a str,
    pub(crate) state: Option<&'a str>,
    pub(crate) accounts: Vec<&'a AccountSpec>,
}

pub(crate) fn consent_page(view: &ConsentView<'_>) -> String {
    let mut body = String::new();
    let name = escape(&view.app.name);
    let _ = write!(
        body,
        "<h1>Connect <strong>{name}</strong> to HubSpot</h1>\
         <p><strong>{name}</strong> is requesting access to your HubSpot account.</p>"
    );
    body.push_str("<h2>Required access</h2><ul class=\"scopes\">");
    for scope in view.required {
        let _ = write!(body, "<li><code>{}</code></li>", escape(scope));
    }
    body.push_str("</ul>");
    let _ = write!(
        body,
        "<form method=\"post\" action=\"/oauth/authorize/decision\">\
         <input type=\"hidden\" name=\"client_id\" value=\"{}\">\
         <input type=\"hidden\" name=\"redirect_uri\" value=\"{}\">\
         <input type=\"hidden\" name=\"scope\" value=\"{}\">\
         <input type=\"hidden\" name=\"optional_scope\" value=\"{}\">",
        escape(&view.app.client_id),
        escape(view.redirect_uri),
        escape(&view.required.join(" ")),
        escape(view.optional_raw),
    );
    if let Some(state) = view.state {
        let _ = write!(
            body,
            "<input type=\"hidden\" name=\"state\" value=\"{}\">",
            escape(state)
        );
    }
    if !view.optional.is_empty() {
        body.push_str("<fieldset><legend>Optional access</legend>");
        for scope in view.optional {
            let s = escape(scope);
            let _ = write!(
                body,
                "<label><input type=\"checkbox\" name=\"grant_optional\" value=\"{s}\" checked> <code>{s}</code></label>"
            );
        }
        body.push_str("</fieldset>");
    }
    body.push_str("<fieldset><legend>Choose an account</legend>");
    if view.accounts.is_empty() {
        body.push_str(
            "<p>No HubSpot accounts are registered in the simulator. Add one with \
             <code>POST /_sim/accounts</code>.</p>",
        );
    }
    let mut first = true;
    for account in &view.accounts {
        for user in &account.users {
            let _ = write!(
                body,
                "<label><input type=\"radio\" name=\"account\" value=\"{}:{}\"{}> {} \
                 (Hub ID {}) as {}</label>",
                account.hub_id,
                user.user_id,
                if first { " checked" } else { "" },
                escape(&account.domain),
                account.hub_id,
                escape(&user.email),
            );
            first = false;
        }
    }
    body.push_str("</fieldset>");
    if !view.accounts.is_empty() {
        body.push_str(
            "<button class=\"approve\" type=\"submit\" name=\"decision\" value=\"approve\">Connect app</button>",
        );
    }
    body.push_str(
        "<button class=\"deny\" type=\"submit\" name=\"decision\" value=\"deny\">Cancel</button></form>",
    );
    page(&format!("Connect {} to HubSpot", view.app.name), &body)
}

/// HubSpot shows an error page (and never redirects) when the client or redirect URI is bad,
/// so a malicious install link cannot bounce a user to an arbitrary site.
pub(crate) fn error_page(title: &str, detail: &str) -> String {
    page(
        title,
        &format!(
            "<h1>{}</h1><p class=\"error\">{}</p>",
            escape(title),
            escape(detail)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
