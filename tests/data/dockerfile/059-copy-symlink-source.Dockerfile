# A source that is a symlink is followed (BuildKit's FollowSymlinks): the
# file it points to is copied under the link's name; inside a copied
# directory, links stay links.
FROM scratch
COPY link /etc/
COPY link /renamed
