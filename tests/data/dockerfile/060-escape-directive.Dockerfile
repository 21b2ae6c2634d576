# escape=`
# The escape directive changes the escape and line-continuation character.
FROM scratch
ENV DIR=C:\data `
    NAME=app
LABEL path=$DIR`\$NAME
COPY a.txt `
     /x/
