-- Erasure (issue 16): the `call` read model shows an erased contact number as null with a flag.
alter table call alter column contact_number drop not null;
alter table call add column personal_data_erased boolean not null default false;
