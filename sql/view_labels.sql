-- labels: what happened in each complete session, from that session's own bar. A view over
-- day_symbol, so a re-ingested bar relabels its session at once; {complete} lists, per exchange,
-- the last session that was complete when `retrain labels` (or `retrain run`) last ran.
CREATE OR REPLACE VIEW labels AS
SELECT
    d.symbol,
    d.exchange,
    d.date AS trade_date,
    d.close / d.open - 1 AS intraday_return,
    d.high / d.open - 1 AS max_favorable_excursion,
    d.low / d.open - 1 AS max_adverse_excursion,
    d.open,
    d.high,
    d.low,
    d.close
FROM day_symbol d
JOIN ({complete}) c ON d.exchange = c.exchange AND d.date <= c.last_complete;
