-- labels: what happened in each complete session, from that session's own bar.
CREATE OR REPLACE VIEW labels AS
SELECT
    symbol::VARCHAR AS symbol,
    exchange::VARCHAR AS exchange,
    trade_date::DATE AS trade_date,
    intraday_return::DOUBLE AS intraday_return,
    max_favorable_excursion::DOUBLE AS max_favorable_excursion,
    max_adverse_excursion::DOUBLE AS max_adverse_excursion,
    open::DOUBLE AS open,
    high::DOUBLE AS high,
    low::DOUBLE AS low,
    close::DOUBLE AS close
FROM {source};
