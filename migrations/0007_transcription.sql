-- Transcription: a second stage of the processing queue, transcription figures on the call
-- row, and the transcripts themselves.

-- A job is first fetched and analysed (`fetch`), then, when a transcription engine is
-- configured, handed to the transcription pool (`transcribe`). Each pool claims only its stage.
alter table processing_job
    add column stage text not null default 'fetch' check (stage in ('fetch', 'transcribe')),
    -- The analysed recording's digest: a transcription worker checks the bytes it transcribes
    -- are the ones that were analysed.
    add column recording_sha256 text;
drop index processing_job_due_idx;
create index processing_job_stage_due_idx on processing_job (stage, due_at);

-- Null when no transcript was due (no engine configured when the call was analysed).
alter table call
    add column transcription_status   text
        check (transcription_status in ('pending', 'transcribing', 'available', 'unavailable')),
    add column transcription_attempts integer not null default 0,
    add column transcript_word_count  bigint,
    add column transcribed_at         timestamptz;

-- One row per transcribed call.
create table transcript (
    partner_id    text        not null,
    call_id       text        not null,
    engine        text        not null,
    model         text        not null,
    language      text        not null,
    -- The segments' texts in time order, joined by spaces.
    text          text        not null,
    segment_count integer     not null,
    word_count    bigint      not null,
    produced_at   timestamptz not null,
    primary key (partner_id, call_id)
);

-- The transcript's segments: who spoke (`agent`/`customer` on stereo calls, `mono` otherwise),
-- when (ms from the start of the recording) and what.
create table transcript_segment (
    partner_id text    not null,
    call_id    text    not null,
    seq        integer not null,
    channel    text    not null check (channel in ('agent', 'customer', 'mono')),
    start_ms   bigint  not null,
    end_ms     bigint  not null,
    text       text    not null,
    primary key (partner_id, call_id, seq)
);

grant select on transcript, transcript_segment to callingest_analyst;
