-- Labels of one exchange (or every one, with $exchange NULL) for trade dates in [$start, $end].
SELECT *
FROM labels
WHERE ($exchange IS NULL OR exchange = $exchange)
  AND trade_date BETWEEN $start AND $end;
