//! The list of broken rules, capped, and the field paths it names.
//!
//! A hostile body can break a rule millions of times; listing them all would cost more than
//! the body itself. So at most [`MAX_LISTED_ERRORS`] are kept, the list says when more were
//! found, and a path is turned into text only when an error is actually kept.

use std::fmt;

use super::FieldError;

/// Most broken rules one answer lists; past it the answer says the list was cut short.
pub const MAX_LISTED_ERRORS: usize = 100;

/// Where a field sits in the request body, e.g. `data[0].call.id`: a chain of borrowed
/// segments on the stack, rendered only when an error is reported.
#[derive(Clone, Copy)]
pub(crate) enum Path<'a> {
    /// The start of a path: `data`, or `` for the body itself.
    Root(&'a str),
    /// `parent[index]`.
    Index(&'a Path<'a>, usize),
    /// `parent.name`.
    Field(&'a Path<'a>, &'a str),
}

impl<'a> Path<'a> {
    pub(crate) fn index(&'a self, index: usize) -> Path<'a> {
        Path::Index(self, index)
    }

    pub(crate) fn field(&'a self, name: &'a str) -> Path<'a> {
        Path::Field(self, name)
    }
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Root(name) => f.write_str(name),
            Path::Index(parent, index) => write!(f, "{parent}[{index}]"),
            Path::Field(parent, name) => write!(f, "{parent}.{name}"),
        }
    }
}

/// The broken rules found so far: the first [`MAX_LISTED_ERRORS`], and whether there were more.
#[derive(Debug, Default)]
pub(crate) struct Errors {
    listed: Vec<FieldError>,
    truncated: bool,
    reported: usize,
}

impl Errors {
    /// Records a broken rule; the path and message are formatted only if it is listed.
    pub(crate) fn report(&mut self, path: impl fmt::Display, message: impl fmt::Display) {
        self.reported += 1;
        if self.listed.len() >= MAX_LISTED_ERRORS {
            self.truncated = true;
            return;
        }
        self.listed.push(FieldError {
            field: path.to_string(),
            message: message.to_string(),
        });
    }

    /// Whether the list is full and more were found: nothing further can be listed, so the
    /// caller may stop looking.
    pub(crate) fn is_truncated(&self) -> bool {
        self.truncated
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.listed.is_empty()
    }

    /// How many broken rules were reported, listed or not.
    pub(crate) fn reported(&self) -> usize {
        self.reported
    }

    pub(crate) fn into_rejection(self) -> super::ValidationErrors {
        super::ValidationErrors {
            errors: self.listed,
            truncated: self.truncated,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_render_as_published() {
        let data = Path::Root("data");
        let item = data.index(3);
        let call = item.field("call");
        assert_eq!(call.field("id").to_string(), "data[3].call.id");
        assert_eq!(Path::Root("").to_string(), "");
    }

    #[test]
    fn the_list_stops_at_its_cap_and_says_so() {
        let mut errors = Errors::default();
        for i in 0..MAX_LISTED_ERRORS {
            errors.report(Path::Root("data").index(i), "broken");
            assert!(!errors.is_truncated());
        }
        errors.report(Path::Root("data"), "one more");
        let rejection = errors.into_rejection();
        assert_eq!(rejection.errors.len(), MAX_LISTED_ERRORS);
        assert!(rejection.truncated);
    }
}
