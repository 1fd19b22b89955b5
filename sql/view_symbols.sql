-- symbols: one row per (exchange, symbol) with its name and sector where known.
CREATE OR REPLACE VIEW symbols AS
SELECT symbol::VARCHAR AS symbol, exchange::VARCHAR AS exchange, name::VARCHAR AS name, sector::VARCHAR AS sector
FROM {source};
