-- Feature rows per version and exchange, and how many of them have a label.
SELECT
    f.feature_version AS version,
    f.exchange,
    count(*) AS rows,
    min(f.trade_date) AS first_date,
    max(f.trade_date) AS last_date,
    count(l.trade_date) AS labelled
FROM features f
LEFT JOIN labels l USING (exchange, symbol, trade_date)
GROUP BY 1, 2
ORDER BY 1, 2;
