-- Partners that may submit calls. The API key itself is never stored, only its SHA-256.
create table partner (
    partner_id            text        primary key check (partner_id ~ '^[A-Za-z0-9._-]{1,64}$'),
    name                  text        not null,
    api_key_sha256        bytea       not null check (length(api_key_sha256) = 32),
    -- `whsec_` + base64 of 32 random bytes; the HMAC key of signed callbacks, so it must be
    -- readable (a hash would not do).
    signing_secret        text        not null check (signing_secret like 'whsec\_%'),
    rate_limit_per_minute integer     not null default 600 check (rate_limit_per_minute > 0),
    created_at            timestamptz not null default now(),
    api_key_rotated_at    timestamptz
);
