//! Who holds the floor in a two-sided call, and the interaction figures that follow from it.
//!
//! # The turn model
//!
//! Input: for each side (agent = left channel, customer = right), when that side is talking,
//! as consecutive stretches of time ([`TurnTracker::push`]). A *run* is an unbroken stretch of
//! one side's talk (the voice-activity detector has already bridged the short pauses between
//! words, see `callingest_audio`).
//!
//! - The first run of the call gives its side the floor: its first turn starts.
//! - A run of the side *without* the floor that lasts more than [`BACKCHANNEL_MAX_MS`] takes the
//!   floor from its first moment: the other side's turn ends and a new turn starts (a *switch*).
//! - A shorter run ("mm-hm", "right", "yes") is a *backchannel* when the side holding the floor
//!   is still talking when it ends or is the next to talk; it neither ends the current turn nor
//!   counts as one. Otherwise (the same side talks again next, or nobody talks after it: a short
//!   answer, the last "bye") it takes the floor from its first moment too.
//! - A turn lasts from its first run's start to the last moment its side talked before the
//!   switch, pauses included; when the other side cut in while it was talking, it ends where
//!   the interruption began.
//!
//! The decision about a short run waits at most until the next run starts, so the tracker keeps
//! a fixed handful of numbers however long the call is: it runs inside the streaming meter.

use serde::{Deserialize, Serialize};

/// Longest run of the side without the floor that is still only a backchannel, in ms.
/// One second holds "mm-hm", "yes", "right", "okay, sure" but not a sentence.
pub const BACKCHANNEL_MAX_MS: u64 = 1_000;

/// The interaction figures of a call, from the audio of both channels. Every figure is `None`
/// for a mono recording (one channel mixes both sides, so no one can tell who is talking) and
/// in events recorded before these figures existed; each figure's own undefined case is on it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Interaction {
    /// Agent talk time / (agent + customer talk time), 0 to 1; `None` when nobody talks.
    #[serde(default)]
    pub talk_ratio: Option<f64>,
    /// Longest agent turn, in ms; `None` when the agent never has the floor.
    #[serde(default)]
    pub longest_monologue_ms: Option<u64>,
    /// Longest customer turn, in ms; `None` when the customer never has the floor.
    #[serde(default)]
    pub longest_customer_story_ms: Option<u64>,
    /// Switches of the floor per minute of recording; `None` for an empty recording.
    #[serde(default)]
    pub interactivity: Option<f64>,
    /// Mean silence between the customer's turn ending and the agent's turn starting, in ms,
    /// over the switches where the agent waited (did not cut in); `None` without such a switch.
    #[serde(default)]
    pub patience_ms: Option<u64>,
    /// Switches from the customer to the agent that `patience_ms` averages (0 when it is `None`).
    #[serde(default)]
    pub patience_switches: Option<u64>,
    /// Turns the agent took.
    #[serde(default)]
    pub agent_turns: Option<u64>,
    /// Turns the customer took.
    #[serde(default)]
    pub customer_turns: Option<u64>,
}

impl Interaction {
    /// The name of the first figure that is not a finite number, if any.
    pub fn non_finite_figure(&self) -> Option<&'static str> {
        [
            ("talk_ratio", self.talk_ratio),
            ("interactivity", self.interactivity),
        ]
        .into_iter()
        .find(|(_, figure)| figure.is_some_and(|f| !f.is_finite()))
        .map(|(name, _)| name)
    }
}

const AGENT: usize = 0;
const CUSTOMER: usize = 1;

/// A short run of the side without the floor, not yet known to be a backchannel or a turn.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    side: usize,
    start: u64,
    /// Still talking (`None`) or stopped at.
    end: Option<u64>,
    /// When the side holding the floor last stopped talking, if it was quiet when the
    /// candidate began (`None`: the candidate cut in).
    holder_quiet_since: Option<u64>,
}

/// The streaming turn model. Time is counted in ticks (samples of the recording, or ms);
/// `ticks_per_second` converts to milliseconds at the end.
#[derive(Debug, Clone)]
pub struct TurnTracker {
    ticks_per_second: u64,
    backchannel_ticks: u64,
    now: u64,
    /// Start of each side's current run, while it talks.
    run_start: [Option<u64>; 2],
    /// End of each side's last finished run.
    last_end: [Option<u64>; 2],
    holder: Option<usize>,
    turn_start: u64,
    candidate: Option<Candidate>,
    talk: [u64; 2],
    turns: [u64; 2],
    longest_turn: [Option<u64>; 2],
    switches: u64,
    patience_sum: u64,
    patience_count: u64,
}

impl TurnTracker {
    pub fn new(ticks_per_second: u32) -> Self {
        let ticks_per_second = u64::from(ticks_per_second.max(1));
        Self {
            ticks_per_second,
            backchannel_ticks: BACKCHANNEL_MAX_MS * ticks_per_second / 1000,
            now: 0,
            run_start: [None; 2],
            last_end: [None; 2],
            holder: None,
            turn_start: 0,
            candidate: None,
            talk: [0; 2],
            turns: [0; 2],
            longest_turn: [None; 2],
            switches: 0,
            patience_sum: 0,
            patience_count: 0,
        }
    }

    /// The next `len` ticks, during which the agent talks (`agent`) and/or the customer talks.
    pub fn push(&mut self, agent: bool, customer: bool, len: u64) {
        if len == 0 {
            return;
        }
        let talking = [agent, customer];
        let t = self.now;
        // Runs that end here are settled before runs that start here.
        for side in [AGENT, CUSTOMER] {
            if !talking[side] {
                if let Some(start) = self.run_start[side].take() {
                    self.run_ended(side, start, t);
                }
            }
        }
        for side in [AGENT, CUSTOMER] {
            if talking[side] && self.run_start[side].is_none() {
                self.run_started(side, t);
            }
        }
        for side in [AGENT, CUSTOMER] {
            if talking[side] {
                self.talk[side] += len;
            }
        }
        self.now += len;
        if let Some(c) = self.candidate {
            if c.end.is_none() && self.now - c.start > self.backchannel_ticks {
                self.switch(c);
            }
        }
    }

    fn run_started(&mut self, side: usize, t: u64) {
        self.run_start[side] = Some(t);
        let Some(holder) = self.holder else {
            self.holder = Some(side);
            self.turn_start = t;
            self.turns[side] += 1;
            return;
        };
        match self.candidate {
            // The holder talks next: the short run before was a backchannel.
            Some(c) if side == holder && c.end.is_some() => self.candidate = None,
            // The same side talks again next: its short run began a turn.
            Some(c) if side == c.side => self.switch(c),
            Some(_) => {}
            None if side != holder => {
                let holder_quiet_since = match self.run_start[holder] {
                    Some(_) => None,
                    None => self.last_end[holder],
                };
                self.candidate = Some(Candidate {
                    side,
                    start: t,
                    end: None,
                    holder_quiet_since,
                });
            }
            None => {}
        }
    }

    fn run_ended(&mut self, side: usize, _start: u64, t: u64) {
        self.last_end[side] = Some(t);
        if let Some(c) = &mut self.candidate {
            if c.side == side && c.end.is_none() {
                c.end = Some(t);
                // The holder talked over it to its end: a backchannel.
                let holder = 1 - side;
                if self.run_start[holder].is_some() {
                    self.candidate = None;
                }
            }
        }
    }

    /// The candidate's side takes the floor from the candidate's start.
    fn switch(&mut self, c: Candidate) {
        let holder = self.holder.expect("a candidate implies a holder");
        let turn_end = c.holder_quiet_since.unwrap_or(c.start).max(self.turn_start);
        self.close_turn(holder, turn_end);
        if holder == CUSTOMER {
            if let Some(quiet_since) = c.holder_quiet_since {
                self.patience_sum += c.start - quiet_since;
                self.patience_count += 1;
            }
        }
        self.switches += 1;
        self.holder = Some(c.side);
        self.turn_start = c.start;
        self.turns[c.side] += 1;
        self.candidate = None;
    }

    fn close_turn(&mut self, side: usize, end: u64) {
        let len = end.saturating_sub(self.turn_start);
        let longest = &mut self.longest_turn[side];
        *longest = Some(longest.map_or(len, |l| l.max(len)));
    }

    fn ms(&self, ticks: u64) -> u64 {
        ((u128::from(ticks) * 1000 + u128::from(self.ticks_per_second) / 2)
            / u128::from(self.ticks_per_second)) as u64
    }

    /// Settles what is pending at the end of the recording and computes the figures.
    pub fn finish(mut self) -> Interaction {
        let t = self.now;
        for side in [AGENT, CUSTOMER] {
            if let Some(start) = self.run_start[side].take() {
                self.run_ended(side, start, t);
            }
        }
        // Nobody talked after a short run: it was a turn (a short answer, the last "bye").
        if let Some(c) = self.candidate {
            self.switch(c);
        }
        if let Some(holder) = self.holder {
            let end = self.last_end[holder].unwrap_or(t);
            self.close_turn(holder, end);
        }
        let talk = self.talk[AGENT] + self.talk[CUSTOMER];
        let minutes = self.now as f64 / self.ticks_per_second as f64 / 60.0;
        Interaction {
            talk_ratio: (talk > 0).then(|| self.talk[AGENT] as f64 / talk as f64),
            longest_monologue_ms: self.longest_turn[AGENT].map(|t| self.ms(t)),
            longest_customer_story_ms: self.longest_turn[CUSTOMER].map(|t| self.ms(t)),
            interactivity: (self.now > 0).then(|| self.switches as f64 / minutes),
            patience_ms: (self.patience_count > 0)
                .then(|| self.ms(self.patience_sum) / self.patience_count),
            patience_switches: Some(self.patience_count),
            agent_turns: Some(self.turns[AGENT]),
            customer_turns: Some(self.turns[CUSTOMER]),
        }
    }
}

/// Builds the figures from whole runs in ms, e.g. spans a script planned: `(start, end)` of
/// each side's talk, in any order, over a recording of `duration_ms`.
pub fn interaction_of_spans(
    agent: &[(u64, u64)],
    customer: &[(u64, u64)],
    duration_ms: u64,
) -> Interaction {
    let mut cuts: Vec<u64> = agent
        .iter()
        .chain(customer)
        .flat_map(|&(a, b)| [a, b])
        .chain([0, duration_ms])
        .filter(|&t| t <= duration_ms)
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    let talks = |spans: &[(u64, u64)], t: u64| spans.iter().any(|&(a, b)| a <= t && t < b);
    let mut tracker = TurnTracker::new(1000);
    for pair in cuts.windows(2) {
        let (from, to) = (pair[0], pair[1]);
        tracker.push(talks(agent, from), talks(customer, from), to - from);
    }
    tracker.finish()
}

/// Figures from the transcript of a stereo call: what each side said, against how long it
/// talked. All `None` without a per-side transcript (mono) and in events recorded before them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TranscriptFigures {
    /// Words in the agent's segments.
    #[serde(default)]
    pub agent_words: Option<u64>,
    /// Words in the customer's segments.
    #[serde(default)]
    pub customer_words: Option<u64>,
    /// Agent words per minute of agent talk time; `None` when the agent never talks.
    #[serde(default)]
    pub agent_words_per_minute: Option<f64>,
    /// Customer words per minute of customer talk time; `None` when the customer never talks.
    #[serde(default)]
    pub customer_words_per_minute: Option<f64>,
    /// Sentences of the agent that end in `?`.
    #[serde(default)]
    pub agent_questions: Option<u64>,
    /// Sentences of the customer that end in `?`.
    #[serde(default)]
    pub customer_questions: Option<u64>,
    /// Agent words / all words, 0 to 1; `None` when nobody said a word.
    #[serde(default)]
    pub agent_word_share: Option<f64>,
}

impl TranscriptFigures {
    /// Counts words and questions per side. `talk_ms` is each side's talk time from the audio
    /// (`None` for mono, which gives no per-side figures).
    pub fn measure<'a>(
        segments: impl IntoIterator<Item = (crate::call::Speaker, &'a str)>,
        talk_ms: Option<(u64, u64)>,
    ) -> Self {
        use crate::call::Speaker;
        let Some((agent_talk_ms, customer_talk_ms)) = talk_ms else {
            return Self::default();
        };
        let (mut words, mut questions) = ([0u64; 2], [0u64; 2]);
        for (speaker, text) in segments {
            let side = match speaker {
                Speaker::Agent => AGENT,
                Speaker::Customer => CUSTOMER,
                Speaker::Mono => return Self::default(),
            };
            words[side] += text.split_whitespace().count() as u64;
            questions[side] += question_count(text);
        }
        let per_minute = |words: u64, talk_ms: u64| {
            (talk_ms > 0).then(|| words as f64 * 60_000.0 / talk_ms as f64)
        };
        let all = words[AGENT] + words[CUSTOMER];
        Self {
            agent_words: Some(words[AGENT]),
            customer_words: Some(words[CUSTOMER]),
            agent_words_per_minute: per_minute(words[AGENT], agent_talk_ms),
            customer_words_per_minute: per_minute(words[CUSTOMER], customer_talk_ms),
            agent_questions: Some(questions[AGENT]),
            customer_questions: Some(questions[CUSTOMER]),
            agent_word_share: (all > 0).then(|| words[AGENT] as f64 / all as f64),
        }
    }

    /// The name of the first figure that is not a finite number, if any.
    pub fn non_finite_figure(&self) -> Option<&'static str> {
        [
            ("agent_words_per_minute", self.agent_words_per_minute),
            ("customer_words_per_minute", self.customer_words_per_minute),
            ("agent_word_share", self.agent_word_share),
        ]
        .into_iter()
        .find(|(_, figure)| figure.is_some_and(|f| !f.is_finite()))
        .map(|(name, _)| name)
    }
}

/// Sentences ending in `?`: every run of question marks counts once ("Really??" is one).
fn question_count(text: &str) -> u64 {
    let mut count = 0;
    let mut previous = ' ';
    for c in text.chars() {
        if c == '?' && previous != '?' {
            count += 1;
        }
        previous = c;
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::Speaker;

    #[test]
    fn alternating_sentences_are_turns_and_switches() {
        // Agent 0–5 s, customer 6–10 s, agent 11–20 s, in a one-minute recording.
        let i = interaction_of_spans(&[(0, 5_000), (11_000, 20_000)], &[(6_000, 10_000)], 60_000);
        assert_eq!(i.agent_turns, Some(2));
        assert_eq!(i.customer_turns, Some(1));
        assert_eq!(i.longest_monologue_ms, Some(9_000));
        assert_eq!(i.longest_customer_story_ms, Some(4_000));
        assert_eq!(i.interactivity, Some(2.0));
        assert_eq!(i.patience_ms, Some(1_000));
        assert_eq!(i.patience_switches, Some(1));
        assert_eq!(i.talk_ratio, Some(14.0 / 18.0));
    }

    #[test]
    fn a_backchannel_inside_a_monologue_does_not_end_it() {
        // The customer says "mm-hm" for 0.6 s while the agent talks, and 0.8 s in a pause.
        let i = interaction_of_spans(
            &[(0, 10_000), (11_000, 30_000)],
            &[(4_000, 4_600), (10_100, 10_900)],
            30_000,
        );
        assert_eq!(i.agent_turns, Some(1));
        assert_eq!(i.customer_turns, Some(0));
        assert_eq!(i.longest_monologue_ms, Some(30_000));
        assert_eq!(i.longest_customer_story_ms, None);
        assert_eq!(i.interactivity, Some(0.0));
        assert_eq!(i.patience_ms, None);
        assert_eq!(i.patience_switches, Some(0));
    }

    #[test]
    fn a_short_answer_followed_by_more_of_the_same_side_is_a_turn() {
        // Agent asks; customer "Yes." (0.5 s), a pause, then explains; agent answers.
        let i = interaction_of_spans(
            &[(0, 3_000), (9_000, 12_000)],
            &[(3_500, 4_000), (4_600, 8_000)],
            12_000,
        );
        assert_eq!(i.customer_turns, Some(1));
        assert_eq!(i.agent_turns, Some(2));
        assert_eq!(i.longest_customer_story_ms, Some(4_500));
        assert_eq!(i.patience_ms, Some(1_000));
    }

    #[test]
    fn the_last_short_word_of_a_call_is_a_turn() {
        let i = interaction_of_spans(&[(0, 5_000)], &[(5_500, 6_000)], 7_000);
        assert_eq!((i.agent_turns, i.customer_turns), (Some(1), Some(1)));
        assert_eq!(i.longest_customer_story_ms, Some(500));
    }

    #[test]
    fn an_interruption_ends_the_interrupted_turn_where_it_began_and_is_no_patience() {
        // Customer talks 0–6 s; the agent cuts in at 5 s and talks to 9 s.
        let i = interaction_of_spans(&[(5_000, 9_000)], &[(0, 6_000)], 10_000);
        assert_eq!(i.longest_customer_story_ms, Some(5_000));
        assert_eq!(i.longest_monologue_ms, Some(4_000));
        assert_eq!(i.patience_ms, None, "an agent cutting in did not wait");
        assert_eq!(i.patience_switches, Some(0));
    }

    #[test]
    fn a_backchannel_overlapping_the_holder_is_not_a_turn_even_when_the_holder_stops_during_it() {
        // Agent 0–4 s; customer "right" 3.8–4.4 s; agent again 4.6–8 s.
        let i = interaction_of_spans(&[(0, 4_000), (4_600, 8_000)], &[(3_800, 4_400)], 8_000);
        assert_eq!((i.agent_turns, i.customer_turns), (Some(1), Some(0)));
        assert_eq!(i.longest_monologue_ms, Some(8_000));
    }

    #[test]
    fn nobody_talking_leaves_the_undefined_figures_null() {
        let i = interaction_of_spans(&[], &[], 60_000);
        assert_eq!(i.talk_ratio, None);
        assert_eq!(i.longest_monologue_ms, None);
        assert_eq!(i.longest_customer_story_ms, None);
        assert_eq!(i.patience_ms, None);
        assert_eq!(i.interactivity, Some(0.0));
        assert_eq!((i.agent_turns, i.customer_turns), (Some(0), Some(0)));
        let empty = interaction_of_spans(&[], &[], 0);
        assert_eq!(empty.interactivity, None, "no minute to divide by");
        assert_eq!(empty.non_finite_figure(), None);
    }

    #[test]
    fn patience_averages_the_gaps_before_the_agent_answers() {
        // Customer → agent switches with gaps of 500 ms and 1500 ms.
        let i = interaction_of_spans(
            &[(0, 2_000), (5_500, 8_000), (11_500, 13_000)],
            &[(2_500, 5_000), (8_500, 10_000)],
            13_000,
        );
        assert_eq!(i.patience_ms, Some(1_000));
        assert_eq!(i.patience_switches, Some(2));
        assert_eq!(i.agent_turns, Some(3));
        assert_eq!(i.customer_turns, Some(2));
    }

    #[test]
    fn ticks_at_a_sample_rate_convert_to_milliseconds() {
        let mut t = TurnTracker::new(8_000);
        t.push(true, false, 16_000); // agent 2 s
        t.push(false, false, 4_000); // 0.5 s
        t.push(false, true, 24_000); // customer 3 s
        let i = t.finish();
        assert_eq!(i.longest_monologue_ms, Some(2_000));
        assert_eq!(i.longest_customer_story_ms, Some(3_000));
        assert_eq!(i.talk_ratio, Some(0.4));
    }

    #[test]
    fn transcript_figures_count_words_and_questions_per_side() {
        let segments = [
            (Speaker::Agent, "Hello, how are you today? Can I help??"),
            (Speaker::Customer, "Fine thanks."),
            (Speaker::Agent, "Great."),
        ];
        let f = TranscriptFigures::measure(segments, Some((30_000, 6_000)));
        assert_eq!(f.agent_words, Some(9));
        assert_eq!(f.customer_words, Some(2));
        assert_eq!(f.agent_questions, Some(2));
        assert_eq!(f.customer_questions, Some(0));
        assert_eq!(f.agent_words_per_minute, Some(18.0));
        assert_eq!(f.customer_words_per_minute, Some(20.0));
        assert_eq!(f.agent_word_share, Some(9.0 / 11.0));
    }

    #[test]
    fn transcript_figures_are_null_for_mono_and_for_silent_sides() {
        let mono = TranscriptFigures::measure([(Speaker::Mono, "Hi there?")], None);
        assert_eq!(mono, TranscriptFigures::default());
        let silent = TranscriptFigures::measure([], Some((0, 0)));
        assert_eq!(silent.agent_words_per_minute, None);
        assert_eq!(silent.agent_word_share, None);
        assert_eq!(silent.agent_questions, Some(0));
    }

    #[test]
    fn figures_of_old_events_read_as_null() {
        let i: Interaction = serde_json::from_str("{}").unwrap();
        assert_eq!(i, Interaction::default());
        let f: TranscriptFigures = serde_json::from_str("{}").unwrap();
        assert_eq!(f, TranscriptFigures::default());
    }
}
