//! Error text for a configuration that could not be read, with secrets
//! masked.
//!
//! The `config` crate's errors quote what the operator wrote: a TOML syntax
//! error echoes the offending source line, a type error echoes the value.
//! Either can be a broker password or a pasted API key, and the text ends up
//! on stderr and in log collectors. [`load_error`] rebuilds the text from the
//! error's parts so that it still names the key, the line and column and the
//! kind of mistake, but shows a value only when it is neither under a
//! secret-looking key nor of unknown context, and never shows a URL's
//! password.
//!
//! Masking is by key name, so a secret pasted under an innocent key (say
//! `connector`) is only masked if it is a URL with a password. What the
//! project's keys hold by design (credential *names*, URLs, file paths) is
//! covered.

use config::ConfigError;

/// What replaces a hidden value.
const MASK: &str = "***";

/// The text of `err` fit for stderr and logs.
pub(super) fn load_error(err: &ConfigError) -> String {
    describe(err, None)
}

/// `key` is the key path an enclosing error named, if any: a bare message
/// does not know which key it is about.
fn describe(err: &ConfigError, key: Option<&str>) -> String {
    match err {
        ConfigError::Type {
            origin,
            unexpected,
            expected,
            key: own,
        } => {
            let key = own.as_deref().or(key);
            let found = mask_quoted(&unexpected.to_string(), is_secret_or_unknown(key));
            let mut text = format!("invalid type: {found}, expected {expected}");
            push_where(&mut text, own.as_deref(), origin.as_deref());
            text
        }
        ConfigError::At {
            error,
            origin,
            key: own,
        } => {
            let mut text = describe(error, own.as_deref().or(key));
            push_where(&mut text, own.as_deref(), origin.as_deref());
            text
        }
        // serde's own messages (`invalid value: string "…"`, `invalid
        // length …`) arrive pre-formatted here.
        ConfigError::Message(message) => mask_quoted(message, is_secret_or_unknown(key)),
        ConfigError::FileParse { uri, cause } => {
            let mut text = toml_error(&cause.to_string());
            if let Some(uri) = uri {
                text.push_str(&format!("\nin {uri}"));
            }
            text
        }
        // Missing files, bad key paths and the like carry no value, but a
        // future variant might: URL passwords are masked all the same.
        other => mask_userinfo(&other.to_string(), false),
    }
}

/// Appends ` for key `…`` and ` in …`, as the `config` crate words them.
fn push_where(text: &mut String, key: Option<&str>, origin: Option<&str>) {
    if let Some(key) = key {
        text.push_str(&format!(" for key `{key}`"));
    }
    if let Some(origin) = origin {
        text.push_str(&format!(" in {origin}"));
    }
}

fn is_secret_or_unknown(key: Option<&str>) -> bool {
    key.is_none_or(|k| is_secret_key(last_segment(k)))
}

/// `saas.a.credential` → `credential`, `amqp.urls[0]` → `urls`.
fn last_segment(mut path: &str) -> &str {
    while let Some(open) = path.strip_suffix(']').and_then(|p| p.rfind('[')) {
        path = &path[..open];
    }
    path.rsplit('.').next().unwrap_or(path).trim_matches('"')
}

/// Whether a key's value may be a secret: it names a credential, password,
/// secret, token, key, cookie, authorization header, webhook (their URLs
/// hold the token in the path) or DSN. The project's own keys of this kind
/// hold credential *names*, which are masked too: a user may well paste the
/// secret itself there. URL keys are not listed: their passwords are masked
/// wherever they appear, and the rest of a URL helps find the mistake.
fn is_secret_key(key: &str) -> bool {
    // Words ending in one of `ENDINGS` (`secret`, `password`) are matched
    // there.
    const WORDS: [&str; 10] = [
        "credential",
        "credentials",
        "passwd",
        "pwd",
        "passphrase",
        "authorization",
        "cookie",
        "webhook",
        "dsn",
        "bearer",
    ];
    // Compounds: `apikey`, `accesstoken`, `clientsecret`, `private_key`.
    const ENDINGS: [&str; 4] = ["key", "token", "secret", "password"];
    key.to_ascii_lowercase()
        .split(|c: char| !c.is_ascii_alphanumeric())
        .any(|w| WORDS.contains(&w) || ENDINGS.iter().any(|e| w.ends_with(e)))
}

/// Masks the values quoted in a serde message: `"…"` (Rust-escaped, so
/// `\"` does not end it) and `` `…` ``. With `secret`, every quoted value
/// is hidden; otherwise only URL passwords are.
fn mask_quoted(text: &str, secret: bool) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find(['"', '`']) {
        let quote = rest[open..].chars().next().unwrap_or('"');
        out.push_str(&mask_userinfo(&rest[..=open], false));
        let body = &rest[open + 1..];
        let len = quoted_len(body, quote);
        out.push_str(&mask_value(&body[..len], secret));
        rest = &body[len..];
        if let Some(close) = rest.strip_prefix(quote) {
            out.push(quote);
            rest = close;
        }
    }
    out.push_str(&mask_userinfo(rest, false));
    out
}

/// Bytes of `body` before its closing `quote` (all of it when unclosed).
/// A backslash escapes the next character in `"…"` only, as in Rust's
/// `Debug` for strings and TOML's basic strings.
fn quoted_len(body: &str, quote: char) -> usize {
    let mut escaped = false;
    for (i, c) in body.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quote == '"' => escaped = true,
            c if c == quote => return i,
            _ => {}
        }
    }
    body.len()
}

fn mask_value(value: &str, secret: bool) -> String {
    match (secret, value.is_empty()) {
        (true, false) => MASK.into(),
        _ => mask_userinfo(value, true),
    }
}

/// Replaces the password of every URL in `text`: `scheme://user:***@host`,
/// the form [`redact_url`](super::redact_url) gives. That helper needs a
/// whole, parseable URL; here URLs sit inside other text and may be broken
/// (the very reason for the error), so the userinfo is found by hand. It
/// runs to the last `@` before the next URL, or, unless the text is a
/// single `value`, before whitespace or a quote: a password holding `@`,
/// `/` or `#` is still masked whole, at the price of masking a little more
/// in the rare URL whose path holds an `@`.
pub(super) fn mask_userinfo(text: &str, value: bool) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(scheme_end) = rest.find("://") {
        let (head, tail) = rest.split_at(scheme_end + 3);
        out.push_str(head);
        let mut limit = tail.find("://").unwrap_or(tail.len());
        if !value {
            limit = tail[..limit]
                .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`'))
                .unwrap_or(limit);
        }
        rest = tail;
        if let Some(at) = tail[..limit].rfind('@') {
            let userinfo = &tail[..at];
            match userinfo.find(':') {
                Some(colon) => {
                    out.push_str(&userinfo[..=colon]);
                    out.push_str(MASK);
                }
                None => out.push_str(userinfo),
            }
            rest = &tail[at..];
        }
    }
    out.push_str(rest);
    out
}

// ---------------------------------------------------------------------------
// TOML syntax errors.
// ---------------------------------------------------------------------------

/// Redacts the source line a `toml` parse error echoes. Its text is
///
/// ```text
/// TOML parse error at line 3, column 29
///   |
/// 3 | url = "amqp://guest:pw@127.0.0.1:5672/%2f
///   |                             ^
/// invalid basic string, expected `"`
/// ```
///
/// The error type cannot be downcast (the `toml` crate is `config`'s, not a
/// dependency here), so the text is taken apart. Any other shape (a new
/// `toml` version) loses the source line and the message rather than risk
/// echoing them; the tests pin the shape.
fn toml_error(text: &str) -> String {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    let Some(line_no) = lines.first().and_then(|l| header_line_number(l)) else {
        // No source line: the message alone, which `toml` words itself.
        return mask_userinfo(text.trim_end(), false);
    };
    let indent = lines
        .get(1)
        .filter(|l| l.trim() == "|")
        .map(|l| l.len() - l.trim_start().len());
    let source = lines
        .get(2)
        .and_then(|l| l.strip_prefix(&format!("{line_no} | ")));
    let caret = lines.get(3).and_then(|l| parse_caret(l));
    let (Some(indent), Some(source), Some((column, width))) = (indent, source, caret) else {
        return format!("{}\n(source line not shown)", lines[0]);
    };
    let (redacted, map) = redact_toml_line(source);
    // The caret pointed into the original line; point it at the same place
    // in the redacted one.
    let end_of_line = map.len() - 1;
    let at = |c: usize| map[c.min(end_of_line)] + c.saturating_sub(end_of_line);
    let (start, end) = (at(column), at(column + width));
    let gutter = format!("{}|", " ".repeat(indent));
    let mut out = format!(
        "{}\n{gutter}\n{line_no} | {redacted}\n{gutter}{}{}",
        lines[0],
        " ".repeat(start + 1),
        "^".repeat(end.saturating_sub(start).max(1)),
    );
    for message in &lines[4..] {
        out.push('\n');
        out.push_str(&mask_userinfo(message, false));
    }
    out
}

/// `TOML parse error at line 3, column 29` → 3.
fn header_line_number(line: &str) -> Option<usize> {
    let rest = line.strip_prefix("TOML parse error at line ")?;
    let (number, column) = rest.split_once(", column ")?;
    column.parse::<usize>().ok()?;
    number.parse().ok()
}

/// `  |      ^^^` → the caret's 0-based column and its width, in characters.
fn parse_caret(line: &str) -> Option<(usize, usize)> {
    let after_bar = line.trim_start().strip_prefix('|')?;
    let marks = after_bar.trim_start_matches(' ');
    let column = (after_bar.len() - marks.len()).checked_sub(1)?;
    (!marks.is_empty() && marks.chars().all(|c| c == '^')).then_some((column, marks.len()))
}

/// What encloses the rest of a line: an inline table (restoring, when it
/// closes, the key that owned it) or an array.
enum Frame {
    Table(Option<String>),
    Array,
}

/// Masks the values on one TOML source line. A value is shown only when the
/// line itself says which key it belongs to and that key is not
/// secret-looking; even then its URL passwords are masked. Anything in
/// unknown context (an array's continuation line, text inside a multi-line
/// string, a line missing its `=`) is hidden, as are comments, which often
/// hold an old value. Keys and table headers are kept: they are what the
/// operator looks for.
///
/// Returns the line and, for each character column of the original (and
/// one past its end), the column it moved to.
fn redact_toml_line(line: &str) -> (String, Vec<usize>) {
    let chars: Vec<char> = line.chars().collect();
    let mut out = String::with_capacity(line.len());
    let mut map = Vec::with_capacity(chars.len() + 1);
    // `original` characters of the line become `text`.
    let mut emit = |original: usize, text: &str| {
        let column = out.chars().count();
        map.extend(std::iter::repeat_n(column, original));
        out.push_str(text);
    };
    let copy = |emit: &mut dyn FnMut(usize, &str), from: usize, to: usize| {
        for c in &chars[from..to] {
            emit(1, c.encode_utf8(&mut [0; 4]));
        }
    };

    let mut stack: Vec<Frame> = Vec::new();
    let mut key: Option<String> = None;
    let mut expect_key = true;
    let mut i = 0;
    while i < chars.len() {
        if expect_key && let Some((len, last)) = key_expression(&chars[i..], i == 0) {
            copy(&mut emit, i, i + len);
            key = last;
            expect_key = false;
            i += len;
            continue;
        }
        expect_key = false;
        let c = chars[i];
        match c {
            '#' => {
                let rest = chars.len() - i;
                emit(rest, if rest > 1 { "# ***" } else { "#" });
                i = chars.len();
            }
            '"' | '\'' => {
                let triple = chars[i..].starts_with(&[c, c, c]);
                let open = if triple { 3 } else { 1 };
                let body: String = chars[i + open..].iter().collect();
                let len = match (triple, c) {
                    (true, _) => body.find(&String::from_iter([c, c, c])),
                    (false, '"') => Some(quoted_len(&body, '"')),
                    (false, _) => body.find('\''),
                }
                .unwrap_or(body.len());
                let content = &body[..len];
                let content_chars = content.chars().count();
                copy(&mut emit, i, i + open);
                emit(
                    content_chars,
                    &mask_value(content, is_secret_or_unknown(key.as_deref())),
                );
                i += open + content_chars;
                let close = (chars.len() - i).min(open);
                copy(&mut emit, i, i + close);
                i += close;
            }
            '{' => {
                stack.push(Frame::Table(key.clone()));
                expect_key = true;
                copy(&mut emit, i, i + 1);
                i += 1;
            }
            '[' => {
                stack.push(Frame::Array);
                copy(&mut emit, i, i + 1);
                i += 1;
            }
            '}' | ']' | ',' => {
                if c == ',' {
                    expect_key = matches!(stack.last(), Some(Frame::Table(_)));
                } else if let Some(Frame::Table(outer)) = stack.pop() {
                    key = outer;
                }
                copy(&mut emit, i, i + 1);
                i += 1;
            }
            c if c.is_whitespace() || c == '=' => {
                copy(&mut emit, i, i + 1);
                i += 1;
            }
            _ => {
                // A bare value: valid TOML makes it a number, boolean or
                // date, but the mistake may be an unquoted URL, whose
                // password may hold anything up to the end of the line.
                let run = chars[i..]
                    .iter()
                    .position(|c| c.is_whitespace() || "#,]}".contains(*c))
                    .unwrap_or(chars.len() - i);
                let word: String = chars[i..i + run].iter().collect();
                let len = if word.contains("://") {
                    chars.len() - i
                } else {
                    run
                };
                let text: String = chars[i..i + len].iter().collect();
                emit(
                    len,
                    &mask_value(&text, is_secret_or_unknown(key.as_deref())),
                );
                i += len;
            }
        }
    }
    emit(1, "");
    (out, map)
}

/// A key and its `=` at the start of `chars` (or, at a line's start, a
/// `[table]` or `[[array]]` header, even one missing its `]`): its length
/// in characters and, for a key, its last segment. Keys are bare
/// (`A-Za-z0-9_-`) or quoted, joined by dots, and never masked.
fn key_expression(chars: &[char], line_start: bool) -> Option<(usize, Option<String>)> {
    let skip_spaces = |mut i: usize| {
        while chars.get(i).is_some_and(|c| *c == ' ' || *c == '\t') {
            i += 1;
        }
        i
    };
    let mut i = skip_spaces(0);
    let brackets = if line_start {
        chars[i..].iter().take_while(|c| **c == '[').count().min(2)
    } else {
        0
    };
    i = skip_spaces(i + brackets);
    let mut last: String;
    let first = i;
    loop {
        let start = i;
        match chars.get(i) {
            // `["…"]` is far likelier an array than a header: its string
            // is a value.
            Some('"' | '\'') if brackets > 0 && start == first => return None,
            Some(q @ ('"' | '\'')) => {
                let end = chars[i + 1..].iter().position(|c| c == q)?;
                last = chars[i + 1..i + 1 + end].iter().collect::<String>();
                i += end + 2;
            }
            _ => {
                while chars
                    .get(i)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
                {
                    i += 1;
                }
                if i == start {
                    return None;
                }
                last = chars[start..i].iter().collect();
            }
        }
        i = skip_spaces(i);
        match chars.get(i) {
            Some('.') => i = skip_spaces(i + 1),
            Some('=') if brackets == 0 => return Some((i + 1, Some(last))),
            Some(']') if brackets > 0 => {
                let closing = chars[i..].iter().take_while(|c| **c == ']').count();
                return Some((i + closing.min(brackets), None));
            }
            None if brackets > 0 => return Some((i, None)),
            _ => return None,
        }
    }
}
