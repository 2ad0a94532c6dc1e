-- Pre-account hijacking: a provider link made before anyone proved control of the user's
-- address is removed when the owner proves it (verification or reset by link).
-- proven: the provider asserted the user's address as verified, or the address was verified
-- when the link was made.
ALTER TABLE accounts ADD COLUMN proven BOOLEAN NOT NULL DEFAULT false;
-- Existing links: proven if the provider asserted the user's address, or the user is verified
-- now (when they were linked is not known; a verified owner has already had the chance to see them).
UPDATE accounts a SET proven = true
FROM users u
WHERE u.id = a.user_id AND ((a.email_verified AND a.email = u.email) OR u.email_verified);
