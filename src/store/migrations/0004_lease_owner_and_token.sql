-- Leases with an owner and a fencing token (SPEC §7).
--
-- A claim records which instance holds the delivery and bumps its token;
-- finishing, releasing and renewing all name the token they hold, so an
-- instance whose lease was taken over after it expired can no longer write
-- a result for that delivery.
ALTER TABLE deliveries ADD COLUMN owner TEXT;
ALTER TABLE deliveries ADD COLUMN lease_token INTEGER NOT NULL DEFAULT 0;
