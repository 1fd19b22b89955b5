-- Training set: feature rows of one version joined to their labels, for one exchange (or ALL)
-- over [start, end] trade dates. Rows without a label (sessions not complete) drop out.
-- Parameters: $version, $scope ('ALL' or an exchange), $start, $end.
SELECT f.*, l.intraday_return AS target
FROM features f
JOIN labels l USING (exchange, symbol, trade_date)
WHERE f.feature_version = $version
  AND ($scope = 'ALL' OR f.exchange = $scope)
  AND f.trade_date BETWEEN $start AND $end
ORDER BY f.trade_date, f.exchange, f.symbol;
