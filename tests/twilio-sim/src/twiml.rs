//! A small TwiML reader: the `<Response>` document becomes a tree of verbs with
//! their attributes, nested nouns and text.

use quick_xml::Reader;
use quick_xml::events::Event;

/// One TwiML element.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub text: String,
    pub children: Vec<Node>,
}

impl Node {
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A boolean attribute; anything but `true` is false, like Twilio.
    pub fn flag(&self, name: &str, default: bool) -> bool {
        match self.attr(name) {
            Some(v) => v.eq_ignore_ascii_case("true"),
            None => default,
        }
    }

    pub fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TwimlError {
    #[error("TwiML is not well-formed XML: {0}")]
    Xml(String),
    #[error("TwiML root element must be <Response>, found <{0}>")]
    NotResponse(String),
    #[error("TwiML document is empty")]
    Empty,
}

/// Parses a TwiML document and returns the `<Response>` element.
pub fn parse(doc: &str) -> Result<Node, TwimlError> {
    let mut reader = Reader::from_str(doc);
    reader.config_mut().trim_text(false);
    let mut stack: Vec<Node> = Vec::new();
    let mut root: Option<Node> = None;
    loop {
        let ev = reader
            .read_event()
            .map_err(|e| TwimlError::Xml(e.to_string()))?;
        match ev {
            Event::Start(e) | Event::Empty(e) if root.is_some() => {
                let _ = e;
                return Err(TwimlError::Xml("content after the root element".to_owned()));
            }
            Event::Start(e) => stack.push(node_from(&e)?),
            Event::Empty(e) => {
                let node = node_from(&e)?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(node),
                    None => root = Some(node),
                }
            }
            Event::End(_) => {
                let Some(node) = stack.pop() else {
                    return Err(TwimlError::Xml("unbalanced end tag".to_owned()));
                };
                match stack.last_mut() {
                    Some(parent) => parent.children.push(node),
                    None => root = Some(node),
                }
            }
            Event::Text(t) => {
                let text = t
                    .decode()
                    .map_err(|e| TwimlError::Xml(e.to_string()))?
                    .into_owned();
                let text = quick_xml::escape::unescape(&text)
                    .map_err(|e| TwimlError::Xml(e.to_string()))?
                    .into_owned();
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&text);
                }
            }
            Event::CData(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&String::from_utf8_lossy(&t));
                }
            }
            Event::GeneralRef(r) => {
                let name = String::from_utf8_lossy(&r).into_owned();
                let resolved = match name.as_str() {
                    "amp" => "&".to_owned(),
                    "lt" => "<".to_owned(),
                    "gt" => ">".to_owned(),
                    "quot" => "\"".to_owned(),
                    "apos" => "'".to_owned(),
                    other => match r.resolve_char_ref() {
                        Ok(Some(c)) => c.to_string(),
                        _ => format!("&{other};"),
                    },
                };
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&resolved);
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !stack.is_empty() {
        return Err(TwimlError::Xml("unclosed element".to_owned()));
    }
    let root = root.ok_or(TwimlError::Empty)?;
    if root.name != "Response" {
        return Err(TwimlError::NotResponse(root.name));
    }
    Ok(root)
}

fn node_from(e: &quick_xml::events::BytesStart<'_>) -> Result<Node, TwimlError> {
    let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
    let mut attrs = Vec::new();
    for a in e.attributes() {
        let a = a.map_err(|err| TwimlError::Xml(err.to_string()))?;
        let key = String::from_utf8_lossy(a.key.as_ref()).into_owned();
        let value = a
            .unescape_value()
            .map_err(|err| TwimlError::Xml(err.to_string()))?
            .into_owned();
        attrs.push((key, value));
    }
    Ok(Node {
        name,
        attrs,
        ..Node::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dial_conference() {
        let doc = r#"<?xml version="1.0" encoding="UTF-8"?><Response><Say>Hi &amp; welcome</Say><Dial><Conference startConferenceOnEnter="false" statusCallbackEvent="start end join">call-CA1</Conference></Dial></Response>"#;
        let r = parse(doc).unwrap();
        assert_eq!(r.children.len(), 2);
        assert_eq!(r.children[0].text, "Hi & welcome");
        let conf = r.children[1].child("Conference").unwrap();
        assert_eq!(conf.text, "call-CA1");
        assert!(!conf.flag("startConferenceOnEnter", true));
    }

    #[test]
    fn refuses_garbage() {
        assert!(parse("not xml <").is_err());
        assert!(parse("<Foo/>").is_err());
        assert!(parse("").is_err());
    }
}
