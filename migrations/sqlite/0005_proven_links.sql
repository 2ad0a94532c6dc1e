-- Pre-account hijacking: a provider link made before anyone proved control of the user's
-- address is removed when the owner proves it (verification or reset by link).
-- proven: the provider asserted the user's address as verified, or the address was verified
-- when the link was made.
ALTER TABLE accounts ADD COLUMN proven INTEGER NOT NULL DEFAULT 0;
-- Existing links: proven if the provider asserted the user's address, or the user is verified
-- now (when they were linked is not known; a verified owner has already had the chance to see them).
UPDATE accounts SET proven = 1
WHERE (email_verified AND email = (SELECT u.email FROM users u WHERE u.id = accounts.user_id))
   OR (SELECT u.email_verified FROM users u WHERE u.id = accounts.user_id);
