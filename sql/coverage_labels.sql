-- Labelled sessions per exchange.
SELECT exchange, count(*) AS rows, min(trade_date) AS first_date, max(trade_date) AS last_date
FROM labels
GROUP BY 1
ORDER BY 1;
