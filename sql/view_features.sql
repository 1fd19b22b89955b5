-- features: one row per (symbol, exchange, trade_date) and feature version; built from bars
-- strictly before trade_date. Every version on disk is here: filter on feature_version.
CREATE OR REPLACE VIEW features AS
SELECT
    symbol::VARCHAR AS symbol,
    exchange::VARCHAR AS exchange,
    trade_date::DATE AS trade_date,
    feature_version::VARCHAR AS feature_version,
    * EXCLUDE (symbol, exchange, trade_date, feature_version, version, month)
FROM {source};
