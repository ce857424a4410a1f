//! Word error rate, to score engines against known text.

/// (substitutions + deletions + insertions) / reference words, after normalising both texts:
/// lowercase, apostrophes removed ("don't" = "dont"), every other non-alphanumeric character a
/// word break, so punctuation and casing choices of an engine are not counted as errors.
///
/// An empty reference gives 0.0 for an empty hypothesis and infinity otherwise (every word is
/// an insertion against nothing).
pub fn word_error_rate(reference: &str, hypothesis: &str) -> f64 {
    let r = normalise(reference);
    let h = normalise(hypothesis);
    if r.is_empty() {
        return if h.is_empty() { 0.0 } else { f64::INFINITY };
    }
    edit_distance(&r, &h) as f64 / r.len() as f64
}

fn normalise(text: &str) -> Vec<String> {
    let mut cleaned = String::with_capacity(text.len());
    for ch in text.chars() {
        if ch == '\'' || ch == '’' {
            continue;
        }
        if ch.is_alphanumeric() {
            cleaned.extend(ch.to_lowercase());
        } else {
            cleaned.push(' ');
        }
    }
    cleaned.split_whitespace().map(str::to_string).collect()
}

/// Levenshtein distance over words, one row at a time.
fn edit_distance(a: &[String], b: &[String]) -> usize {
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, wa) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, wb) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(wa != wb);
            cur[j + 1] = substitute.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_text_ignoring_case_and_punctuation_scores_zero() {
        assert_eq!(word_error_rate("Hello, world!", "hello world"), 0.0);
        assert_eq!(word_error_rate("I don't know.", "I dont know"), 0.0);
        assert_eq!(word_error_rate("well-known", "well known"), 0.0);
    }

    #[test]
    fn substitutions_deletions_and_insertions_each_count_once() {
        assert_eq!(word_error_rate("the cat sat", "the dog sat"), 1.0 / 3.0);
        assert_eq!(word_error_rate("the cat sat", "the sat"), 1.0 / 3.0);
        assert_eq!(
            word_error_rate("the cat sat", "the cat sat down"),
            1.0 / 3.0
        );
        assert_eq!(word_error_rate("a b c d", ""), 1.0);
    }

    #[test]
    fn can_exceed_one_when_the_hypothesis_is_much_longer() {
        assert_eq!(word_error_rate("yes", "thank you very much"), 4.0);
    }

    #[test]
    fn empty_reference() {
        assert_eq!(word_error_rate("", " . "), 0.0);
        assert!(word_error_rate("", "you").is_infinite());
    }
}
