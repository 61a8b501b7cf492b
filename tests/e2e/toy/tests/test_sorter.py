from bubble.sorter import sorter


def test_sorts_a_short_list():
    assert sorter([3, 1, 2]) == [1, 2, 3]
