//! One walk over a JSON value that builds nothing: it checks how deep the value nests and finds
//! the strings and keys that hold the NUL character, keeping the path of where it is only as a
//! stack of borrowed segments that is rendered when something is reported.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::Deserializer;

use super::errors::Errors;
use super::raw::{Raw, StrSeed};

/// Deepest nesting of arrays and objects a request body may have, counting the body itself.
///
/// An accepted call is stored inside an event one level deeper than it was sent, and every
/// reader of the event log refuses documents nested deeper than 128 levels: this keeps every
/// stored event readable with a wide margin.
pub const MAX_NESTING_DEPTH: usize = 100;

const NUL_MESSAGE: &str = "must not contain the NUL character (\\u0000)";

enum Segment<'de> {
    Index(usize),
    Key(Cow<'de, str>),
}

/// Where a walk reports to: the path prefix of the walked value and the error list. `None`
/// when the walk only checks the nesting.
pub(crate) struct Report<'r> {
    prefix: String,
    errors: &'r mut Errors,
}

struct State<'r, 'de> {
    report: Option<Report<'r>>,
    stack: Vec<Segment<'de>>,
}

impl State<'_, '_> {
    fn nul_found(&mut self, key: Option<&str>) {
        let Some(report) = self.report.as_mut() else {
            return;
        };
        let stack = &self.stack;
        let path = PathText {
            prefix: &report.prefix,
            stack,
            key,
        };
        report.errors.report(path, NUL_MESSAGE);
    }
}

/// `prefix` + the segments + a last key; a NUL in a key is shown as `\u0000`.
struct PathText<'a, 'de> {
    prefix: &'a str,
    stack: &'a [Segment<'de>],
    key: Option<&'a str>,
}

impl fmt::Display for PathText<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.prefix)?;
        let key =
            |f: &mut fmt::Formatter<'_>, key: &str| write!(f, ".{}", key.replace('\0', "\\u0000"));
        for segment in self.stack {
            match segment {
                Segment::Index(index) => write!(f, "[{index}]")?,
                Segment::Key(name) => key(f, name)?,
            }
        }
        if let Some(name) = self.key {
            key(f, name)?;
        }
        Ok(())
    }
}

/// Walks one value whose parent nests `depth` levels deep.
pub(crate) struct Walk<'s, 'r, 'de> {
    state: &'s mut State<'r, 'de>,
    depth: usize,
}

impl<'s, 'r, 'de> Walk<'s, 'r, 'de> {
    fn child(&mut self, depth: usize) -> Walk<'_, 'r, 'de> {
        Walk {
            state: &mut *self.state,
            depth,
        }
    }

    fn enter<E: de::Error>(&self) -> Result<usize, E> {
        let depth = self.depth + 1;
        if depth > MAX_NESTING_DEPTH {
            return Err(E::custom(format_args!(
                "arrays and objects nested deeper than {MAX_NESTING_DEPTH} levels"
            )));
        }
        Ok(depth)
    }
}

/// Checks a raw value that sits at `prefix` (e.g. `data[3]`) of a body, its parent nesting
/// `depth` levels deep: reports every NUL character with its path, and refuses (with the reason)
/// a value nested deeper than [`MAX_NESTING_DEPTH`].
///
/// Most values hold no NUL and no exponent: byte scans settle the nesting and find no
/// `\u0000` escape (the only way JSON text can hold a NUL) and no number that could be out of
/// range, and the slower walk that reads every value is skipped.
pub(crate) fn scan(
    raw: Raw<'_>,
    prefix: String,
    depth: usize,
    errors: &mut Errors,
) -> Result<(), String> {
    let text = raw.get();
    check_nesting(text, depth)?;
    let report = if text.contains("\\u0000") {
        Some(Report { prefix, errors })
    } else if may_hold_out_of_range_number(text) {
        None
    } else {
        return Ok(());
    };
    // The walk reads every number as a double, refusing those out of range (`1e400`):
    // PostgreSQL would store them, but no reader of the stored call could read it back.
    let mut state = State {
        report,
        stack: Vec::new(),
    };
    let mut de = serde_json::Deserializer::from_str(text);
    Walk {
        state: &mut state,
        depth,
    }
    .deserialize(&mut de)
    .map_err(|err| err.to_string())
}

fn too_deep() -> String {
    format!("arrays and objects nested deeper than {MAX_NESTING_DEPTH} levels")
}

/// Whether well-formed JSON text holds a number with an exponent or of over 300 digits: the
/// only ones that can be out of the range of a double.
fn may_hold_out_of_range_number(text: &str) -> bool {
    let (mut in_string, mut escaped, mut in_number, mut digits) = (false, false, false, 0);
    for &byte in text.as_bytes() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => {
                in_string = true;
                in_number = false;
            }
            b'-' | b'0'..=b'9' | b'.' => {
                if !in_number {
                    (in_number, digits) = (true, 0);
                }
                digits += 1;
                if digits > 300 {
                    return true;
                }
            }
            b'e' | b'E' if in_number => return true,
            _ => in_number = false,
        }
    }
    false
}

/// Counts brackets outside strings in well-formed JSON text.
fn check_nesting(text: &str, depth: usize) -> Result<(), String> {
    let (mut depth, mut in_string, mut escaped) = (depth, false, false);
    for &byte in text.as_bytes() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_NESTING_DEPTH {
                    return Err(too_deep());
                }
            }
            b']' | b'}' => depth -= 1,
            _ => {}
        }
    }
    Ok(())
}

impl<'de> DeserializeSeed<'de> for Walk<'_, '_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_, '_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        if v.contains('\0') {
            self.state.nul_found(None);
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        let depth = self.enter()?;
        let mut index = 0;
        loop {
            self.state.stack.push(Segment::Index(index));
            let more = seq.next_element_seed(self.child(depth))?;
            self.state.stack.pop();
            if more.is_none() {
                return Ok(());
            }
            index += 1;
        }
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        let depth = self.enter()?;
        while let Some(key) = map.next_key_seed(StrSeed)? {
            if key.contains('\0') {
                // Reported on the key; what it holds is only checked for nesting.
                self.state.nul_found(Some(&key));
                let report = self.state.report.take();
                let walked = map.next_value_seed(self.child(depth));
                self.state.report = report;
                walked?;
            } else {
                self.state.stack.push(Segment::Key(key));
                map.next_value_seed(self.child(depth))?;
                self.state.stack.pop();
            }
        }
        Ok(())
    }
}
