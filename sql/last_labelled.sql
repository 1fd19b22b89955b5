-- The last session that has both a feature row of $version and a label, in $scope.
SELECT max(f.trade_date)
FROM features f
JOIN labels l USING (exchange, symbol, trade_date)
WHERE f.feature_version = $version AND ($scope = 'ALL' OR f.exchange = $scope);
