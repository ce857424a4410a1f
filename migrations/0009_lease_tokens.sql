-- Heartbeat leases: every claim of a queue row carries a fresh token. The holder renews the
-- lease, records its step's outcome and releases the row only while the row still carries its
-- token, so a worker whose lease expired and was claimed by another can neither extend it nor
-- record anything on the call.
alter table processing_job add column lease_token uuid;
alter table callback_delivery add column lease_token uuid;
