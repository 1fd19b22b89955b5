-- The last session that has both a feature row of $version and a label, in $scope, on or before
-- $until (NULL: no bound; a past --as-of reads the past only).
SELECT max(f.trade_date)
FROM features f
JOIN labels l USING (exchange, symbol, trade_date)
WHERE f.feature_version = $version AND ($scope = 'ALL' OR f.exchange = $scope)
  AND ($until IS NULL OR f.trade_date <= $until);
