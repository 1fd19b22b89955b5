-- day_symbol: one row per bar. Column contract: symbol, exchange, date, open, high, low, close,
-- adj_close, volume, rsi, macd, macd_signal, macd_histogram, atr, obv.
CREATE OR REPLACE VIEW day_symbol AS
SELECT
    symbol::VARCHAR AS symbol,
    exchange::VARCHAR AS exchange,
    date::DATE AS date,
    open::DOUBLE AS open,
    high::DOUBLE AS high,
    low::DOUBLE AS low,
    close::DOUBLE AS close,
    adj_close::DOUBLE AS adj_close,
    volume::BIGINT AS volume,
    rsi::DOUBLE AS rsi,
    macd::DOUBLE AS macd,
    macd_signal::DOUBLE AS macd_signal,
    macd_histogram::DOUBLE AS macd_histogram,
    atr::DOUBLE AS atr,
    obv::DOUBLE AS obv
FROM {source};
