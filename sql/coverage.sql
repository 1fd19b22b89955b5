-- Per exchange: symbols, bars, first and last session, indicator (RSI) coverage.
SELECT
    exchange,
    count(DISTINCT symbol) AS symbols,
    count(*) AS bars,
    min(date) AS first_date,
    max(date) AS last_date,
    count(rsi) AS bars_with_rsi
FROM day_symbol
GROUP BY exchange
ORDER BY exchange;
